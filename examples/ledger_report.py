"""Where did the money go? A day of simulated traffic, a ledger, alerts and a report.

Three features used by a handful of users of two tenants call gpt-4o and
gpt-4o-mini (budgetguard's built-in fake model: no API key, no network).
Every call lands in a SQLite ledger; alerts fire at 50% and 80% of each
user's daily budget and for any single call above 2 cents. At the end the
ledger answers "spend per feature / user / model", in code and through the
``budgetguard`` command.

    python examples/ledger_report.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import budgetguard as bg
from budgetguard.cli import main as budgetguard_cli
from budgetguard.testing import FakeChatModel

FEATURES = {"summarize": 800, "chat": 300, "agent": 1500}  # max_tokens per call


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="budgetguard-example-"))
    ledger = bg.SQLiteLedger(workdir / "ledger.db")
    alerts = bg.Alerts(
        rules=[bg.RequestCost(usd="0.02")],
        sinks=[lambda alert: print(f"  ALERT  {alert.message}")],
    )
    bg.configure(
        policy=bg.Policy(
            limits=[
                bg.Limit(scope="user", usd="0.25", window="day"),
                bg.Limit(scope="feature", key="agent", usd=1, window="day"),
            ],
            on_exceed="downgrade",
            downgrade={"gpt-4o": "gpt-4o-mini"},
            alerts=[bg.Threshold(0.5), bg.Threshold(0.8)],
        ),
        listeners=[ledger, alerts],
    )

    model = FakeChatModel(seed=3)
    rng = random.Random(3)
    refused = 0
    for _ in range(300):
        tenant = rng.choice(["acme", "globex"])
        user = f"u-{rng.randint(1, 4)}"
        feature = rng.choice(list(FEATURES))
        messages = [
            {"role": "user", "content": "Summarize: " + "lorem ipsum " * rng.randint(50, 400)}
        ]
        with bg.budget(tenant=tenant, user=user, feature=feature):
            try:
                model.complete(
                    rng.choice(["gpt-4o", "gpt-4o-mini"]), messages, max_tokens=FEATURES[feature]
                )
            except bg.BudgetExceeded:
                refused += 1
    alerts.flush()
    ledger.flush()
    print(f"\n300 calls, {refused} refused by a limit\n")

    for by in ("feature", "model"):
        print(f"spend per {by}:")
        for row in ledger.report(by, since="1d"):
            print(f"  {row.key or '-':12} {row.calls:4d} calls  {bg.Money.usd(row.cost)}")
        print()

    print("the same from the command line: budgetguard report --by user --ledger ...\n")
    budgetguard_cli(["report", "--by", "user", "--ledger", f"sqlite:///{ledger.path}"])
    ledger.close()
    alerts.close()


if __name__ == "__main__":
    main()
