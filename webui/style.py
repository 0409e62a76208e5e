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
"""
# Not in CSS above: Gradio scopes that under its container (where its own text colours win), and
# these rules look at <html>'s state.
HEAD_CSS = """<style>
.live-msg b { color: #fff !important; }
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
  .status-strip .pill[data-key="capture"], .status-strip .pill[data-key="display"],
  .status-strip .pill[data-key="backend"], .status-strip .pill[data-key="device"] { display: none !important; }
  html[data-onlooker-state="running"] #upload, html[data-onlooker-state="running"] #url,
  html[data-onlooker-state="running"] #fallback-banner { display: none !important; }
}
</style>"""
# System fonts only: the default theme would fetch web fonts from a CDN, which breaks offline use.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
