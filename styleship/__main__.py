from styleship.cli import main

main()
