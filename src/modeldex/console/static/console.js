// The console's only script: copy buttons, loading a chosen file into a text box, and sending each form
// once. Pages work without it.
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
// A change is sent once: a second click (or Enter) while the first is on its way would send it again, and its
// answer (a new key "already exists", a deleted model "not found") would replace the first one's, a new
// key's secret with it. Searches (GET) may be sent again.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.method !== "post") return;
  if (form.dataset.sent) {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "yes";
  // If the answer never comes (the browser's Stop, a lost connection), the form can be sent again.
  setTimeout(() => { delete form.dataset.sent; }, 15000);
});
window.addEventListener("pageshow", () => {  // a page shown again from the back-forward cache
  for (const form of document.forms) delete form.dataset.sent;
});
