from noisefloor.cli import main

raise SystemExit(main())
