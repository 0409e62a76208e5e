"""The page's look: its style sheet, the rules that must sit in <head>, and a theme of system fonts only."""

from __future__ import annotations

import gradio as gr

CSS = """
.live-area { position: relative; width: 100%; min-height: 220px; border-radius: 8px; background: #111;
             display: flex; flex-direction: column; align-items: center; justify-content: center; overflow: hidden; }
.live-area img, .live-area video { width: 100%; display: block; }
.live-area [hidden] { display: none !important; }
.live-msg { color: #ddd; padding: 24px; text-align: center; }
.live-msg b { color: #fff; }
.live-msg.problem { color: #fff; background: #5c1d1d; border-left: 4px solid #e55; text-align: left;
                    margin: 12px; border-radius: 6px; }
.live-msg .hint { opacity: 0.8; font-size: 0.9em; }
.live-caption { position: absolute; left: 0; right: 0; bottom: 0; padding: 6px 12px; color: #fff;
                background: rgba(0,0,0,0.65); font-size: 0.95em; }
.status-strip { display: flex; flex-wrap: wrap; gap: 6px; font-size: 0.85em; }
.status-strip .pill { padding: 2px 8px; border-radius: 999px; background: rgba(127,127,127,0.15); cursor: help; }
.chat-pane { height: 420px; overflow-y: auto; display: flex; flex-direction: column; gap: 6px; padding: 8px;
             border: 1px solid rgba(127,127,127,0.3); border-radius: 8px; }
.chat-pane .msg { align-self: flex-start; max-width: 95%; padding: 6px 10px; border-radius: 10px;
                  background: rgba(127,127,127,0.12); line-height: 1.35; }
.chat-pane .msg .clock { font-family: ui-monospace, monospace; font-size: 0.8em; opacity: 0.6; margin-right: 6px; }
.chat-pane .msg[data-state="streaming"] .text::after { content: " ▍"; opacity: 0.5; }
.chat-pane .opinion { border-left: 3px solid #3b82f6; }
.chat-pane .opinion.alert { border-left-color: #e55; }
.chat-pane .note { align-self: center; font-size: 0.78em; opacity: 0.65; text-align: center; }
.chat-pane:empty::before { content: "Comments will appear here as Onlooker watches."; opacity: 0.5; margin: auto; }
.banner { border-left: 4px solid #e8a317; padding: 6px 12px; }
.banner details { font-size: 0.9em; opacity: 0.85; margin-top: 4px; }
#autoplay-note { position: absolute; top: 8px; left: 8px; right: 8px; z-index: 2; background: #3a2a05; color: #fff; }
.carrier { display: none !important; }
.small-note { font-size: 0.8em; opacity: 0.75; }
#history-player { width: 100%; max-height: 480px; background: #000; border-radius: 8px; }
.transcript { max-height: 360px; overflow-y: auto; padding-left: 1.4em; margin: 0; }
.transcript .clock { font-family: ui-monospace, monospace; font-size: 0.8em; opacity: 0.6; margin-right: 6px; }
#stop:disabled { opacity: 0.45; cursor: not-allowed; }
#save-default { white-space: nowrap; }
.chat-pane .alert-msg { align-self: stretch; max-width: none; background: rgba(229,72,77,0.09);
                        border: 1px solid rgba(229,72,77,0.4); border-left: 4px solid #e5484d; }
.chat-pane .alert-msg[data-state="cleared"] { background: rgba(232,163,23,0.06); border-color: rgba(232,163,23,0.35);
                                              border-left-color: #e8a317; }
.alert-head { display: flex; align-items: baseline; gap: 8px; }
.alert-badge { font-size: 0.75em; font-weight: 700; letter-spacing: 0.05em; color: #fff; background: #e5484d;
               border-radius: 4px; padding: 1px 6px; white-space: nowrap; }
.alert-msg[data-state="cleared"] .alert-badge { background: #b7791f; }
.alert-rule { flex: 1; font-weight: 600; }
.chat-pane .alert-msg .alert-head .clock { margin: 0; }
.alert-snap { display: block; width: 100%; max-height: 240px; object-fit: contain; background: #000; border-radius: 6px;
              margin: 6px 0 4px; }
.alert-why { font-size: 0.85em; opacity: 0.8; }
.chat-pane .alert-clear { color: #b7791f; opacity: 0.9; }
#rules .html-container { padding: 6px 0 0; }
#rules-box .rules { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 4px; }
#rules-box .rule { display: flex; align-items: center; gap: 8px; padding: 4px 6px; border-radius: 8px; margin: 0;
                   background: rgba(127,127,127,0.08); }
.rule-state { flex: none; min-width: 66px; text-align: center; font-size: 0.7em; font-weight: 700;
              letter-spacing: 0.05em; text-transform: uppercase; padding: 1px 6px; border-radius: 999px;
              background: rgba(127,127,127,0.18); }
.rule[data-state="alert"] { background: rgba(229,72,77,0.12) !important; }
.rule[data-state="alert"] .rule-state { color: #fff; background: #e5484d; }
.rule[data-state="paused"] .rule-text { opacity: 0.5; }
.rule-text { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#rules-box .rule button { flex: none; margin: 0; font-size: 0.8em; padding: 1px 8px; border-radius: 6px;
                          border: 1px solid rgba(127,127,127,0.35); background: transparent; color: inherit;
                          cursor: pointer; }
#rules-box .rule button:hover { background: rgba(127,127,127,0.15); }
.rules-note { font-size: 0.85em; margin: 0 0 6px; padding: 4px 8px; border-radius: 4px; color: var(--error-text-color);
              background: rgba(229,72,77,0.08); border-left: 3px solid #e5484d; }
.rules-empty { font-size: 0.85em; opacity: 0.6; margin: 0; }
.notify { display: inline-flex; align-items: center; gap: 6px; font-size: 0.85em; margin-top: 8px; cursor: pointer; }
.status-strip .pill[data-state="on"], .status-strip .pill[data-state="down"] { background: rgba(229,72,77,0.22); }
.status-strip .pill[data-state="retrying"] { background: rgba(232,163,23,0.22); }
.status-strip .pill[data-state="ok"] { background: rgba(34,197,94,0.16); }
"""
# Not in CSS above: Gradio scopes that under its container (where its own text colours win), and
# these rules look at <html>'s state.
HEAD_CSS = """<style>
.live-msg b { color: #fff !important; }
.rule[data-state="active"] .rule-state::before { content: "ready"; }
html[data-onlooker-state="running"] .rule[data-state="active"] .rule-state::before { content: "watching"; }
html[data-onlooker-state="running"] .rule[data-state="active"] .rule-state { color: #16a34a;
  background: rgba(34,197,94,0.18); }
@media (max-width: 700px) {
  #source-mode .wrap { gap: 6px !important; }
  #source-mode label { padding: 4px 10px !important; }
  #tabs .tab-wrapper { padding-bottom: 0 !important; }
  #watch-tab { padding-top: 4px !important; }
  .banner-next { display: none !important; }
  #upload .wrap, #upload button { min-height: 0 !important; }
  #upload { max-height: 80px !important; }
  .chat-pane { height: 260px !important; }
  .live-area { min-height: 120px !important; }
  #header p, .banner-more, #watch-column .info-text, #sync { display: none !important; }
  #rules-box .rule { flex-wrap: wrap; }
  #rules-box .rule-text { order: -1; flex-basis: 100%; white-space: normal; }
  .status-strip .pill[data-key="capture"], .status-strip .pill[data-key="display"],
  .status-strip .pill[data-key="backend"], .status-strip .pill[data-key="device"] { display: none !important; }
  html[data-onlooker-state="running"] #upload, html[data-onlooker-state="running"] #url,
  html[data-onlooker-state="running"] #fallback-banner { display: none !important; }
}
</style>"""
# System fonts only: the default theme would fetch web fonts from a CDN, which breaks offline use.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
