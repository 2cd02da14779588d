from netagent.cli import main

main()
