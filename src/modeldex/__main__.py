from modeldex.cli.main import main

main()
