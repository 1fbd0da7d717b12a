from retrainer.cli import main

main()
