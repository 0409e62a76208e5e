// Onlooker's page client: one WebSocket per tab (webui/channel.py) carries the live picture, the
// speech, the chat and the status strip; the webcam's frames go back over it. Speech is played with
// Web Audio at the time the server's audio gate booked it (plus LEAD for the network), so what is
// heard stays with the picture instead of drifting behind a media player's buffer.
// window.onlooker exposes the player's own record (heard, tap) for the browser tests and bench/speech.py.
// A watch rule's alert is a bubble with its snapshot, a short beep (unless muted) and, when the user asked
// for them with "Notify me", a browser notification; beeps and notified count them for the tests.
(() => {
  const PICTURE = 1, AUDIO = 2, WEBCAM = 3;
  const LEAD = 0.25; // seconds after its booked time a chunk plays: room for the network's jitter
  const LATE_DROP = 1.5; // a chunk that could only start this much after its booked time is dropped
  const MAX_MESSAGES = 200; // a long session must not grow the page without bound
  const WEBCAM_EVERY = 100; // ms between webcam frames sent (10 fps)
  const O = (window.onlooker = {
    run: 0, mode: 'Upload', state: 'idle', ws: null, token: null, offset: 0, rtt: Infinity,
    ctx: null, gain: null, sources: new Set(), nextFree: 0, muted: false, blocked: false,
    heard: [], dropped: 0, tapBlocks: [], pictures: 0, camera: null, reconnects: 0,
    notify: false, beeps: 0, notified: 0,
  });
  const $ = (id) => document.getElementById(id);
  const serverNow = () => Date.now() + O.offset;

  // ---------- the channel ----------
  function connect(token) {
    if (O.ws && O.token === token) return;
    if (O.ws) O.ws.close();
    O.token = token;
    const url = new URL(`onlooker/tab/${token}`, document.baseURI);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    O.ws = ws;
    ws.onopen = () => { setState(O.state); O.rtt = Infinity; for (let i = 0; i < 5; i++) setTimeout(ping, i * 200); };
    ws.onmessage = (e) => (typeof e.data === 'string' ? onText(JSON.parse(e.data)) : onBinary(e.data));
    ws.onclose = (e) => {
      if (O.ws !== ws) return;
      O.ws = null;
      if (e.code === 4404) { showMessage('This page lost its connection to Onlooker. Reload the page.', 'failed'); return; }
      O.reconnects += 1;
      setTimeout(() => { if (!O.ws) { O.token = null; connect(token); } }, 1000);
    };
  }
  function ping() { if (O.ws && O.ws.readyState === 1) O.ws.send(JSON.stringify({ type: 'ping', c: Date.now() })); }
  setInterval(ping, 10000);

  function onText(m) {
    if (m.type === 'pong') {
      const rtt = Date.now() - m.c;
      if (rtt <= O.rtt) { O.rtt = rtt; O.offset = m.s - (m.c + rtt / 2); }
      return;
    }
    if (m.type === 'status') { const box = $('status-box'); if (box) box.innerHTML = m.html; return; }
    if (m.type === 'rules') { const box = $('rules-box'); if (box) box.innerHTML = m.html; return; }
    if (m.type === 'run') { newRun(m); return; }
    if (m.run !== O.run) return; // something the old run still said
    if (m.type === 'failed') { setState('failed'); showProblem('Could not start', m.text); }
    else if (m.type === 'problem') { setState('failed'); showProblem('Stopped', m.text); }
    else if (m.type === 'stopped') { silence(); setState('idle'); showMessage('Stopped. Press <b>Start</b> to watch again.'); }
    else if (m.type === 'ended') {
      setState('ended');
      if (!m.error) showMessage('The video has ended. Press <b>Start</b> to watch again.');
    } else chat(m);
  }

  function onBinary(buffer) {
    const view = new DataView(buffer);
    const kind = view.getUint8(0), run = view.getUint32(1, true);
    if (run !== O.run) return;
    if (kind === PICTURE) showPicture(buffer.slice(13));
    else if (kind === AUDIO) {
      const playsAt = view.getFloat64(5, true), media = view.getFloat64(13, true), rate = view.getUint32(21, true);
      play(playsAt * 1000, media, rate, new Int16Array(buffer, 26));
    }
  }

  // ---------- runs and the live area ----------
  function newRun(m) {
    silence();
    O.run = m.run;
    O.mode = m.mode;
    const pane = $('chat-pane');
    if (pane) pane.innerHTML = '';
    const caption = $('live-caption');
    if (caption) { caption.textContent = ''; caption.hidden = true; }
    const img = $('live-img');
    if (img) { img.hidden = true; img.removeAttribute('src'); }
    setState('running');
    if (m.mode === 'Webcam') { cameraPreview(true); showMessage(''); }
    else showMessage(`Opening ${escapeHtml(m.label)}…`, 'connecting');
    ensureAudio();
  }
  function setState(state) {
    O.state = state;
    document.documentElement.dataset.onlookerState = state;
    const area = $('live-area');
    if (area) area.dataset.state = state;
    const stop = $('stop');
    if (stop) stop.disabled = state !== 'running';
  }
  function showMessage(html, kind) {
    const box = $('live-msg');
    if (!box) return;
    box.className = 'live-msg' + (kind ? ' ' + kind : '');
    box.innerHTML = html;
    box.hidden = !html;
  }
  function showProblem(title, text) {
    const hint = O.mode === 'URL' ? 'Check the address (and the camera) and press Start again.'
      : O.mode === 'Upload' ? 'Try another file, or re-encode this one (H.264 MP4 plays everywhere).'
      : 'Check that the camera is allowed for this page and press Start again.';
    showMessage(`<b>${title}.</b> ${escapeHtml(text)}<br><span class="hint">${hint}</span>`, 'problem');
    const img = $('live-img');
    if (img) img.hidden = true;
  }
  let lastUrl = null;
  function showPicture(jpeg) {
    const img = $('live-img');
    if (!img) return;
    const url = URL.createObjectURL(new Blob([jpeg], { type: 'image/jpeg' }));
    img.onload = () => { if (lastUrl && lastUrl !== url) URL.revokeObjectURL(lastUrl); lastUrl = url; };
    img.src = url;
    O.pictures += 1;
    if (img.hidden) { img.hidden = false; showMessage(''); }
  }
  const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

  // ---------- chat ----------
  function chat(m) {
    const pane = $('chat-pane');
    if (!pane) return;
    const nearBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
    let el = m.id !== undefined ? pane.querySelector(`[data-id="${m.id}"]`) : null;
    if (m.type === 'comment') {
      el = bubble('comment', m.clock, '');
      el.dataset.id = m.id;
      el.dataset.state = 'streaming';
      pane.appendChild(el);
    } else if (m.type === 'delta' && el) {
      el.querySelector('.text').textContent += m.text;
    } else if (m.type === 'final' && el) {
      el.querySelector('.text').textContent = m.text;
      el.dataset.state = 'done';
    } else if (m.type === 'drop' && el) {
      el.remove();
    } else if (m.type === 'alert') {
      pane.appendChild(m.state === 'started' ? alertBubble(m) : alertCleared(pane, m));
      if (m.state === 'started') { beep(); notifyAlert(m); }
    } else if (m.type === 'opinion') {
      pane.appendChild(bubble(m.alert ? 'opinion alert' : 'opinion', (m.alert ? '🚨 ' : '🔎 ') + m.task, m.text));
    } else if (m.type === 'note') {
      const note = document.createElement('div');
      note.className = 'note';
      note.textContent = m.text;
      pane.appendChild(note);
    } else return;
    while (pane.children.length > MAX_MESSAGES) pane.firstElementChild.remove();
    if (nearBottom) pane.scrollTop = pane.scrollHeight;
    const last = [...pane.querySelectorAll('.comment')].pop();
    const caption = $('live-caption');
    if (caption && last && O.mode !== 'Webcam') {
      caption.textContent = last.querySelector('.text').textContent;
      caption.hidden = !caption.textContent;
    }
  }
  function bubble(kind, label, text) {
    const el = document.createElement('div');
    el.className = 'msg ' + kind;
    el.innerHTML = '<span class="clock"></span><span class="text"></span>';
    el.querySelector('.clock').textContent = label;
    el.querySelector('.text').textContent = text;
    return el;
  }

  // ---------- alerts ----------
  function alertBubble(m) {
    const el = document.createElement('div');
    el.className = 'msg alert-msg';
    el.dataset.alert = m.id;
    el.dataset.state = 'on';
    el.innerHTML = '<div class="alert-head"><span class="alert-badge">⚠ ALERT</span><span class="alert-rule"></span>'
      + '<span class="clock"></span></div><img class="alert-snap" alt=""><div class="alert-why"></div>';
    el.querySelector('.alert-rule').textContent = m.text;
    el.querySelector('.clock').textContent = m.clock;
    el.querySelector('.alert-why').textContent = `${m.reason} · ${Math.round(m.confidence * 100)}% sure`;
    const img = el.querySelector('.alert-snap');
    if (m.image) { img.src = m.image; img.alt = `the picture when "${m.text}" was seen`; } else img.remove();
    return el;
  }
  function alertCleared(pane, m) {
    const started = pane.querySelector(`.alert-msg[data-alert="${CSS.escape(m.id)}"]`);
    if (started) started.dataset.state = 'cleared';
    const note = document.createElement('div');
    note.className = 'note alert-clear';
    note.textContent = `${m.clock} · ✓ clear: ${m.text} (${m.reason})`;
    return note;
  }
  // Two short tones through the speech's volume control: heard with the speech, silent when muted.
  function beep() {
    if (O.muted || !O.ctx || O.ctx.state !== 'running') return;
    const t = O.ctx.currentTime + 0.02;
    [[0, 880], [0.16, 660]].forEach(([after, hz]) => {
      const osc = O.ctx.createOscillator(), env = O.ctx.createGain();
      osc.frequency.value = hz;
      env.gain.setValueAtTime(0.0001, t + after);
      env.gain.exponentialRampToValueAtTime(0.3, t + after + 0.01);
      env.gain.exponentialRampToValueAtTime(0.0001, t + after + 0.14);
      osc.connect(env).connect(O.gain);
      osc.start(t + after);
      osc.stop(t + after + 0.15);
    });
    O.beeps += 1;
  }
  function notifyAlert(m) {
    if (!O.notify || !('Notification' in window) || Notification.permission !== 'granted') return;
    try {
      new Notification(`⚠ ${m.text}`, { body: `${m.clock} · ${m.reason}`, icon: m.image, tag: m.id });
      O.notified += 1;
    } catch (err) { /* a browser that allows notifications only from a service worker */ }
  }
  // "Notify me": the browser asks for permission only now, when the user asks for notifications.
  document.addEventListener('change', (e) => {
    if (e.target.id !== 'notify-me') return;
    const box = e.target;
    if (!box.checked) { O.notify = false; return; }
    if (!('Notification' in window)) { box.checked = false; box.parentElement.title = 'This browser has no notifications.'; return; }
    Notification.requestPermission().then((answer) => {
      O.notify = box.checked = answer === 'granted';
      if (answer === 'denied') box.parentElement.title = 'Notifications are blocked for this page: allow them in the address bar.';
    });
  });
  // A rule's Pause, Resume or Remove goes to the server on the channel; the box comes back changed.
  document.addEventListener('click', (e) => {
    const button = e.target.closest && e.target.closest('#rules-box button[data-do]');
    if (!button || !O.ws || O.ws.readyState !== 1) return;
    button.disabled = true;
    O.ws.send(JSON.stringify({ type: 'rule', do: button.dataset.do, rule: button.dataset.rule }));
  });

  // ---------- speech ----------
  function ensureAudio() {
    if (!O.ctx) {
      O.ctx = new AudioContext({ latencyHint: 'interactive' });
      O.gain = O.ctx.createGain();
      O.gain.gain.value = O.muted ? 0 : 1;
      O.gain.connect(O.ctx.destination);
    }
    if (O.ctx.state !== 'running') O.ctx.resume().catch(() => {});
    return O.ctx;
  }
  // Context time ↔ epoch ms on this page's clock, from the context's own output timestamp.
  function contextEpoch() {
    const ts = O.ctx.getOutputTimestamp ? O.ctx.getOutputTimestamp() : {};
    const ctxTime = ts.contextTime || O.ctx.currentTime;
    const perf = ts.performanceTime || performance.now();
    return { ctxTime, epoch: performance.timeOrigin + perf };
  }
  function play(bookedMs, media, rate, pcm) {
    if (O.state !== 'running' && O.state !== 'ended') return; // stopped: what was still on the way is not played
    const ctx = ensureAudio();
    if (ctx.state !== 'running') { blockedNote(true); O.dropped += 1; return; }
    const ref = contextEpoch();
    const target = ref.ctxTime + (bookedMs - O.offset - ref.epoch) / 1000 + LEAD;
    const start = Math.max(target, O.nextFree, ctx.currentTime + 0.02);
    if (start - target > LATE_DROP) { O.dropped += 1; return; }
    const buffer = ctx.createBuffer(1, pcm.length, rate);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    const node = ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(O.gain);
    node.onended = () => O.sources.delete(node);
    node.start(start);
    O.sources.add(node);
    O.nextFree = start + buffer.duration;
    const heardMs = ref.epoch + (start - ref.ctxTime + (ctx.outputLatency || 0)) * 1000 + O.offset;
    // ctx: the start on the audio clock itself, where the schedule is exact (heard maps it to epoch ms, with the
    // jitter of the output timestamp under load)
    O.heard.push({ run: O.run, booked: bookedMs, heard: heardMs, ctx: start, seconds: buffer.duration, media, at: serverNow() });
    if (O.heard.length > 5000) O.heard.splice(0, 1000);
  }
  function silence() {
    const now = serverNow();
    for (const h of O.heard) if (h.heard + h.seconds * 1000 > now) h.cut = now; // it never sounded (in full)
    for (const node of O.sources) { try { node.stop(); } catch (e) { /* already ended */ } }
    O.sources.clear();
    O.nextFree = 0;
  }
  // Stop pressed: silence at once, before the server has even heard of it.
  O.stopNow = () => { O.stoppedAt = serverNow(); silence(); setState('idle'); };
  O.mute = (muted) => {
    O.muted = muted;
    if (O.gain) O.gain.gain.setValueAtTime(muted ? 0 : 1, O.ctx.currentTime);
    return muted;
  };
  function blockedNote(on) {
    O.blocked = on;
    const note = $('autoplay-note');
    if (note) note.style.display = on ? 'block' : 'none';
  }
  // The next click or key anywhere lets a blocked context start (browsers need a user gesture).
  const unblock = () => {
    if (!O.ctx) return;
    O.ctx.resume().then(() => { if (O.ctx.state === 'running') blockedNote(false); }).catch(() => {});
  };
  document.addEventListener('pointerdown', unblock, true);
  document.addEventListener('keydown', unblock, true);
  // What is actually rendered, 10 ms blocks of (context time, RMS) from an AudioWorklet after the
  // gain: gaps and overlaps as heard, for tests and the bench.
  O.listen = async () => {
    const ctx = ensureAudio();
    const code = `class Tap extends AudioWorkletProcessor {
      constructor() { super(); this.e = 0; this.n = 0; this.t = -1; this.out = []; }
      process(inputs) {
        const x = inputs[0] && inputs[0][0];
        if (this.t < 0) this.t = currentTime;
        if (x) for (let i = 0; i < x.length; i++) this.e += x[i] * x[i];
        this.n += 128;
        if (this.n >= sampleRate / 100) {
          this.out.push(this.t, Math.sqrt(this.e / this.n)); this.e = 0; this.n = 0; this.t = -1;
          if (this.out.length >= 100) { this.port.postMessage(this.out); this.out = []; }
        }
        return true;
      }
    }
    registerProcessor('onlooker-tap', Tap);`;
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], { type: 'application/javascript' })));
    const tap = new AudioWorkletNode(ctx, 'onlooker-tap');
    tap.port.onmessage = (e) => {
      const ref = contextEpoch();
      for (let i = 0; i < e.data.length; i += 2) {
        O.tapBlocks.push([ref.epoch + (e.data[i] - ref.ctxTime) * 1000 + O.offset, e.data[i + 1]]);
      }
    };
    const sink = ctx.createGain();
    sink.gain.value = 0;
    O.gain.connect(tap).connect(sink).connect(ctx.destination);
    return true;
  };

  // ---------- the webcam ----------
  async function cameraPreview(on) {
    const video = $('cam-preview');
    if (!video) return;
    if (!on) {
      if (O.camera) O.camera.getTracks().forEach((t) => t.stop());
      O.camera = null;
      video.hidden = true;
      return;
    }
    if (O.camera) { video.hidden = false; return; }
    try {
      O.camera = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: false });
      video.srcObject = O.camera;
      video.hidden = false;
      if (O.state !== 'running') showMessage('');
    } catch (err) {
      showProblem('No camera', `${err.name}: ${err.message}. Allow camera access for this page (the camera icon in the address bar); browsers allow it only on https:// or localhost.`);
    }
  }
  const grab = document.createElement('canvas');
  setInterval(() => {
    const video = $('cam-preview');
    if (O.mode !== 'Webcam' || O.state !== 'running' || !O.camera || !video || !video.videoWidth) return;
    if (!O.ws || O.ws.readyState !== 1 || O.ws.bufferedAmount > 1e6) return;
    const scale = Math.min(1, 640 / Math.max(video.videoWidth, video.videoHeight));
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grab.getContext('2d').drawImage(video, 0, 0, grab.width, grab.height);
    const run = O.run;
    grab.toBlob(async (blob) => {
      if (!blob || !O.ws || run !== O.run) return;
      const header = new Uint8Array(5);
      header[0] = WEBCAM;
      new DataView(header.buffer).setUint32(1, run, true);
      O.ws.send(new Blob([header, blob]));
    }, 'image/jpeg', 0.8);
  }, WEBCAM_EVERY);
  // The source radio: Webcam shows the camera's own preview in the live area (one preview, no delay).
  // O.pickMode also runs when the page loads, for the source it starts with (a saved default).
  O.pickMode = (mode) => {
    if (O.state === 'running') return;
    O.mode = mode;
    cameraPreview(mode === 'Webcam');
    showMessage(mode === 'Webcam' ? '' : 'Pick a source and press <b>Start</b>.');
  };
  document.addEventListener('change', (e) => {
    if (e.target.closest && e.target.closest('#source-mode')) O.pickMode(e.target.value);
  }, true);

  // The tab's channel token arrives in the page when it loads (a hidden element); connect then.
  // (Gradio adds this script to the page itself, after it has loaded: the element may already be there.)
  const lookForTab = () => {
    const tab = $('onlooker-tab');
    if (tab && tab.dataset.token) connect(tab.dataset.token);
  };
  new MutationObserver(lookForTab).observe(document.documentElement, { childList: true, subtree: true });
  lookForTab();
})();
