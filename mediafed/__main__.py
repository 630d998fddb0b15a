from mediafed.cli import main

raise SystemExit(main())
