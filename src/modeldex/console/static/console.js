// The console's only script: copy buttons, and loading a chosen file into a text box. Pages work without it.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied.";
  } catch (error) {
    field.select();  // no clipboard access (plain http, or refused): leave it selected to copy by hand
    if (status) status.textContent = "Select and copy it by hand (Ctrl+C).";
  }
});
document.addEventListener("change", async (event) => {
  const input = event.target;
  if (!input.matches || !input.matches("input[type=file][data-load-into]") || !input.files.length) return;
  document.getElementById(input.dataset.loadInto).value = await input.files[0].text();
});
