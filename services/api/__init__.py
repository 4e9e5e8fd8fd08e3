"""The HTTP API (issue 7): operators, cashiers, engineers, integrators and consumers reach
meterflow here. ``meterflow api`` runs one uvicorn worker per replica; docs/api.md is the guide.

Design, in one paragraph per concern:

- **Reads come from a read model, not from a database.** :mod:`services.api.readmodel` assigns
  every partition of mf.iam, mf.registry, mf.comm, mf.tariffs, mf.billing, mf.ledger, mf.alarms,
  mf.commands and mf.notifications (no consumer group: each replica reads everything from the beginning) and folds the
  facts with the pure :mod:`services.api.views`. A replica is ready (``/readyz``) once it has
  caught up to the high-watermarks seen at start. Readings and reports come from ClickHouse
  (:mod:`services.api.reporting`, builders in :mod:`services.api.analytics.queries`).
- **Writes are facts.** Accounts, tariff versions, money movements, commands, projects, users,
  roles and API keys are published as events (:mod:`services.api.writer`); the API then waits,
  bounded by ``MF_API_APPLY_TIMEOUT_S``, until its own read model shows the effect, so a caller's
  next read sees its write. A money movement's id derives from the ``Idempotency-Key`` (same key,
  same fact, applied once by billing; same key with another body → 409). A recharge answers 201
  with the balance billing booked (its ``BalanceChanged`` caused by the recharge), or 202 with
  ``Location: /money-movements/{id}`` while billing has not booked it yet.
- **Identity is on the log too** (:mod:`libs.events.iam`, topic mf.iam): argon2 password hashes,
  SHA-256 of API key secrets, roles, visible projects and the login log (time, IP). Tokens are
  HS256 JWTs that prove identity only; roles and the disabled flag are read per request.
- **Permissions are data** (:mod:`services.api.permissions`): each route declares one permission
  with ``Needs(P.X)``; the OpenAPI document shows it as ``x-permission`` and the permission-matrix
  test walks the route table. **Tenancy**: every view is keyed by (project, id); requests see
  only the projects of their principal (``ProjectScope``), consumers only their own accounts, and
  anything outside answers 404 exactly like a missing id.
- **Errors** are RFC 9457 problem documents (:mod:`services.api.problems`); lists are paginated
  with ``limit``/``offset`` and a ``next`` link (:mod:`services.api.pagination`).
"""
