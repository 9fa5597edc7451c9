from fedgate.cli import main

raise SystemExit(main())
