from worker.policies.lint.command import main

raise SystemExit(main())
