"""The scenarios: per server (chat, idle, history, storm), interleaved (fixed, bigroom), and the report of them."""

import json
import os

from .bigroom import report_bigroom, scenario_bigroom
from .chat import report_chat
from .fixed import report_fixed, scenario_fixed
from .history import report_history
from .idle import report_idle
from .storm import storm_report

# Scenarios that start their servers themselves, alternating them rep by rep:
# name -> (run(ctx, results, save), report(its results, opts)).
INTERLEAVED = {"fixed": (scenario_fixed, report_fixed), "bigroom": (scenario_bigroom, report_bigroom)}


def run_interleaved(ctx, scenarios, results, meta):
    def save():
        with open(os.path.join(ctx.workdir, "results.json"), "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)

    for sc in scenarios:
        if sc in INTERLEAVED:
            INTERLEAVED[sc][0](ctx, results, save)
            save()


def report_interleaved(results, opts):
    return "".join("\n\n" + rep(results[sc], opts) for sc, (_, rep) in INTERLEAVED.items() if sc in results)


def report(results, opts):
    """The tables of the per-server scenarios: chat, idle, history, storm."""
    out = report_chat(results, opts) + report_idle(results) + report_history(results)
    out.append(storm_report(results))
    return "\n".join(out)
