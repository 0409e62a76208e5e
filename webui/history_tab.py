"""The History tab's layout and wiring; what it does lives in ``webui.history``."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from webui import history
from webui.history import HIT_COLUMNS, SESSION_COLUMNS, HistoryAccess

NO_VIDEO = (
    '<p class="small-note">The narrated video is made on request: the source video, the narration and the '
    "subtitles in one MP4.</p>"
)
CONFIRM_DELETE_JS = "(id) => (confirm('Delete this session and all its files? This cannot be undone.') ? id : '')"


def file_url(path: str | None) -> str:
    """The page's address for a file in the app's cache (Gradio's file route, behind its login)."""
    return "gradio_api/file=" + quote(str(path)) if path else ""


def build_history_tab(access: HistoryAccess) -> gr.Tab:
    """The tab (inside the app's ``gr.Tabs``); when history is off it only says why."""
    with gr.Tab("History", id="history", elem_id="history-tab") as tab:
        if access.off_because:
            gr.Markdown(access.off_because, elem_id="history-off")
            return tab
        removed = gr.Markdown("", elem_id="history-removed", elem_classes=["small-note"])
        with gr.Row(equal_height=True):
            words = gr.Textbox(
                label="Search every comment",
                placeholder="a red car · someone at the door",
                scale=4,
                elem_id="history-search",
            )
            find = gr.Button("Search", scale=1, min_width=100, elem_id="history-find")
        hits = gr.Dataframe(headers=HIT_COLUMNS, interactive=False, visible=False, wrap=True, elem_id="history-hits")
        sessions = gr.Dataframe(
            headers=SESSION_COLUMNS,
            interactive=False,
            wrap=True,
            label="Sessions (newest first); pick one to open it",
            elem_id="history-sessions",
        )
        session_ids, hit_ids, chosen = gr.State([]), gr.State([]), gr.State("")
        with gr.Group(visible=False, elem_id="history-session") as page:
            title = gr.Markdown(elem_id="history-title")
            with gr.Row():
                with gr.Column(scale=3):
                    video = gr.HTML(NO_VIDEO, elem_id="history-video")
                    make = gr.Button("Make the narrated video (MP4)", size="sm", elem_id="history-make")
                with gr.Column(scale=2):
                    transcript = gr.HTML(elem_id="history-transcript")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="history-files")
            delete = gr.Button("Delete this session", variant="stop", size="sm", elem_id="history-delete")

        def login(request: gr.Request) -> str | None:
            return getattr(request, "username", None)

        def refresh(request: gr.Request) -> tuple[Any, ...]:
            table, ids = history.session_table(access, login(request))
            return table, ids, history.notice(access)

        def search(text: str, request: gr.Request) -> tuple[Any, ...]:
            if not text.strip():
                return gr.update(visible=False, value=[]), []
            table, ids = history.search_table(access, login(request), text)
            if not table:
                gr.Info(f"No comment matches “{text.strip()}”.")
            return gr.update(visible=bool(table), value=table), ids

        def cached(paths: list[Path]) -> list[str]:
            """Copies in the app's cache (named by their content, so the MP4 the player and the downloads
            share is copied once), from where only logged-in visitors can fetch them."""
            return [files.move_resource_to_block_cache(p) or "" for p in paths]

        def player(media: tuple[Path, Path | None] | None) -> str:
            """A <video> with the subtitles as a <track> (Gradio's Video no longer takes subtitles)."""
            if media is None:
                return NO_VIDEO
            mp4, vtt = (cached([p])[0] if p else None for p in media)
            track = (
                f'<track kind="subtitles" srclang="en" label="Comments" src="{file_url(vtt)}" default>' if vtt else ""
            )
            return f'<video id="history-player" controls preload="metadata" src="{file_url(mp4)}">{track}</video>'

        def open_row(ids: list[str], event: gr.SelectData, request: gr.Request) -> tuple[Any, ...]:
            session_id = ids[event.index[0]] if ids and event.index else ""
            title, media, transcript_html, downloads = history.open_session(access, login(request), session_id)
            made = gr.update(visible=media is None)
            return session_id, gr.update(visible=True), title, player(media), made, transcript_html, cached(downloads)

        def make_video(session_id: str, request: gr.Request) -> tuple[Any, ...]:
            media, downloads = history.make_video(access, login(request), session_id)
            return player(media), gr.update(visible=False), cached(downloads)

        def delete_it(session_id: str, request: gr.Request) -> tuple[Any, ...]:
            if not session_id:  # the visitor said no
                return (gr.update(), gr.update(), gr.update(), gr.update(), gr.update())
            history.delete_session(access, login(request), session_id)
            gr.Info("Session deleted.")
            table, ids = history.session_table(access, login(request))
            return table, ids, "", gr.update(visible=False), history.notice(access)

        page_outputs = [chosen, page, title, video, make, transcript, files]
        tab.select(refresh, None, [sessions, session_ids, removed], show_progress="hidden")
        words.submit(search, words, [hits, hit_ids])
        find.click(search, words, [hits, hit_ids])
        sessions.select(open_row, session_ids, page_outputs)
        hits.select(open_row, hit_ids, page_outputs)
        make.click(make_video, chosen, [video, make, files])
        delete.click(delete_it, chosen, [sessions, session_ids, chosen, page, removed], js=CONFIRM_DELETE_JS)
    return tab
