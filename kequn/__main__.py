from kequn.cli import main

main()
