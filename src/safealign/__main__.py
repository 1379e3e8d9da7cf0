from safealign.cli import main

raise SystemExit(main())
