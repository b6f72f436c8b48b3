from ctdoctor.cli import main

raise SystemExit(main())
