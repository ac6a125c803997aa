from rationad.cli import main

raise SystemExit(main())
