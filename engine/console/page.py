"""The console's HTML: the login form and the one page (server-rendered skeleton; script.py fills it live).

No inline script and no inline styles: the style sheet and the script are served from their own routes, so
the Content-Security-Policy can forbid inline code. Every value shown is set with ``textContent`` by the
script or escaped here.
"""
from __future__ import annotations

from tradeloop.engine.report.html import CSS as REPORT_CSS, esc

CSS = REPORT_CSS + """
header{display:flex;gap:12px;align-items:center;flex-wrap:wrap}header h1{margin:8px 12px 8px 0}
header form{margin:0}.who{color:#555}
.badges{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0}
.badge{padding:2px 8px;border-radius:10px;background:#e8e8e8;font-size:12px}
.badge.ok{background:#d7f0dc;color:#0b5b1f}.badge.bad{background:#f8d4d4;color:#8a1111}
.badge.warn{background:#fde9c3;color:#6b4500}
#msg{min-height:1.5em;margin:6px 0;font-weight:600}#msg.ok{color:#0b5b1f}#msg.fail{color:#a11}
#error{color:#fff;background:#a11;padding:4px 8px;border-radius:4px}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;background:#fff;border:1px solid #e3e3e3;
border-radius:6px;padding:8px;margin:8px 0}
.controls fieldset{border:0;margin:0;padding:0;display:flex;gap:6px;align-items:center}
button{font:inherit;padding:2px 10px;cursor:pointer}button:disabled{cursor:not-allowed;opacity:.45}
button.danger{background:#b71c1c;color:#fff;border:1px solid #7f0000}input{font:inherit;padding:2px 4px}
input.reason{width:10em}.countdown{font-variant-numeric:tabular-nums;font-weight:600}.countdown.late{color:#a11}
svg#equity{width:100%;height:220px;background:#fff;border:1px solid #e3e3e3;border-radius:6px}
svg#equity path.series{fill:none;stroke:#1f77b4;stroke-width:1.5}svg#equity text{font-size:11px;fill:#666}
.pos{color:#0b5b1f}.neg{color:#a11}.login{max-width:360px;margin:80px auto;background:#fff;border:1px solid #e3e3e3;
border-radius:8px;padding:20px}.login label{display:block;margin:10px 0 4px}
.login input{width:100%;box-sizing:border-box}
.login button{margin-top:14px}.empty{color:#999;font-style:italic}
section{content-visibility:auto;contain-intrinsic-size:auto 300px}
table.fixed{table-layout:fixed;width:100%}table.fixed td,table.fixed th{overflow:hidden;text-overflow:ellipsis}
td.wrap{white-space:normal;text-align:left;min-width:14em;max-width:28em}
"""

HEAD = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="stylesheet" href="/console.css">')


def login_page(message: str = "") -> str:
    """The login form: a user name (for users-file users) and a password or token."""
    note = f'<p id="msg" class="fail">{esc(message)}</p>' if message else '<p id="msg"></p>'
    return (f"{HEAD}<title>tradeloop console: log in</title></head><body><main><form class=\"login\" method=\"post\" "
            "action=\"/login\"><h1>tradeloop console</h1>"
            f"{note}<label for=\"user\">user (blank with a console token)</label>"
            "<input id=\"user\" name=\"user\" autocomplete=\"username\" maxlength=\"64\">"
            "<label for=\"secret\">password or token</label>"
            "<input id=\"secret\" name=\"secret\" type=\"password\" autocomplete=\"current-password\" "
            "maxlength=\"256\" required>"
            "<button type=\"submit\">log in</button></form></main></body></html>\n")


def console_page(user: str, role: str, csrf: str) -> str:
    """The console: status, controls (enabled for traders only), and empty tables the script fills live."""
    dis = "" if role == "trader" else " disabled"

    def section(title: str, ident: str, cls: str = "") -> str:
        c = f' class="{cls}"' if cls else ""
        return (f'<section><h2>{title}</h2><div class="scroll"><table id="{ident}"{c}><tbody></tbody></table></div>'
                '</section>')

    controls = (
        f'<div class="controls" id="controls"><fieldset><span>book</span>'
        f'<button id="halt-book"{dis}>halt book</button><button id="resume-book"{dis}>resume book</button>'
        f'<button id="reset-dd"{dis}>reset drawdown stop</button></fieldset>'
        f'<fieldset><label for="sym">symbol</label><input id="sym" maxlength="64" size="12"{dis}>'
        f'<button id="halt-sym"{dis}>halt</button><button id="resume-sym"{dis}>resume</button></fieldset>'
        f'<fieldset><label for="why">reason</label><input id="why" class="reason" maxlength="500"{dis}></fieldset>'
        f'<fieldset><button id="kill" class="danger"{dis}>kill switch</button>'
        '<span id="killbox" hidden><label for="killword">type KILL to cancel every working order and flatten '
        f'every position</label> <input id="killword" size="6" maxlength="8" autocomplete="off"{dis}>'
        f' <button id="kill-confirm" class="danger"{dis}>confirm kill</button>'
        f' <button id="kill-cancel"{dis}>cancel</button></span></fieldset></div>')
    return (f'{HEAD}<meta name="csrf-token" content="{esc(csrf)}"><title>tradeloop console</title></head>'
            f'<body data-role="{esc(role)}"><main>'
            '<header><h1>tradeloop console</h1>'
            f'<span class="who" id="who">{esc(user)} ({esc(role)})</span>'
            f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{esc(csrf)}">'
            '<button type="submit">log out</button></form></header>'
            '<div id="error" hidden></div>'
            '<div class="badges" id="status"><span class="badge">connecting...</span></div>'
            f'{controls}<div id="msg" role="status" aria-live="polite"></div>'
            '<section><h2>Account</h2><table id="account"><tbody></tbody></table></section>'
            + section("Pending reviews", "reviews")
            + section("Positions", "positions", "fixed")
            + section("Working orders", "orders", "fixed")
            + '<section><h2>Equity</h2><svg id="equity" class="chart" data-kind="equity" aria-label="equity" '
              'viewBox="0 0 1000 220" preserveAspectRatio="none"><path class="series" d=""></path>'
              '<text id="eq-hi" x="4" y="14"></text><text id="eq-lo" x="4" y="214"></text></svg></section>'
            + '<div class="grid2">' + section("Fills", "fills", "fixed") + section("Risk events", "risk")
            + section("Audit trail", "audit") + section("Models", "models") + '</div>'
            + '</main><script src="/console.js"></script></body></html>\n')
