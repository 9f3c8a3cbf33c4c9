from asyncperf.tools.cli import main

raise SystemExit(main())
