from ganray.train.cli import main

main()
