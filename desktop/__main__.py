from desktop.cli import main

if __name__ == "__main__":  # not on import: the model process (spawn) imports the main module
    raise SystemExit(main())
