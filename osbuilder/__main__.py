from osbuilder.cli import main

raise SystemExit(main())
