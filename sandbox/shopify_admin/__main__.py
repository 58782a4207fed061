from sandbox.shopify_admin.server import main

raise SystemExit(main())
