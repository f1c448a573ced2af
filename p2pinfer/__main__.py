from p2pinfer.cli.main import main

main()
