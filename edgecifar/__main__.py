from edgecifar.cli import main

main()
