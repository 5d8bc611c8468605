from emostt.cli import main

raise SystemExit(main())
