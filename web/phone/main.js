// Switchyard browser softphone: JsSIP over the server's SIP WebSocket, WebRTC audio.
// Bundled with JsSIP by esbuild (web/build.sh) into web/dist/phone.js, which the server
// embeds and serves at /phone/phone.js. No CDN, no framework.
//
// The page keeps a small state object on `window.switchyardPhone` (status, call state, what
// it hears) so that people see it in the page and tests can read it.

import JsSIP from 'jssip/lib/JsSIP';

const $ = (id) => document.getElementById(id);
const state = {
  status: 'signed out', // 'registering', 'registered', 'failed: …'
  call: 'idle', // 'calling', 'ringing', 'incoming', 'in call', 'ended', 'failed: …'
  muted: false,
  held: false,
  heardHz: 0, // dominant frequency of the remote audio, 0 when silent
  heardLevel: 0, // RMS of the remote audio, 0-1
  log: [],
};
window.switchyardPhone = state;

let ua = null;
let session = null;
let audioCtx = null;
let analyser = null;

function log(text) {
  state.log.push(`${new Date().toISOString()} ${text}`);
  const el = $('log');
  if (el) {
    el.textContent = state.log.slice(-12).join('\n');
  }
}

function show() {
  $('status').textContent = state.status;
  $('call-state').textContent = state.call;
  $('heard').textContent = state.heardHz ? `${Math.round(state.heardHz)} Hz` : '–';
  const inCall = session !== null;
  $('dial').disabled = !(ua && ua.isRegistered()) || inCall;
  $('hangup').disabled = !inCall;
  $('answer').hidden = state.call !== 'incoming';
  $('reject').hidden = state.call !== 'incoming';
  $('mute').disabled = state.call !== 'in call';
  $('hold').disabled = state.call !== 'in call';
  $('mute').textContent = state.muted ? 'Unmute' : 'Mute';
  $('hold').textContent = state.held ? 'Resume' : 'Hold';
  $('mute').setAttribute('aria-pressed', String(state.muted));
  $('hold').setAttribute('aria-pressed', String(state.held));
}

// What the remote party sounds like: its dominant frequency and level, measured with
// WebAudio. Chromium only feeds a remote WebRTC stream to WebAudio when the stream also plays
// in a media element, so it plays (muted when the page is told to be quiet) in #remote.
function listen(stream) {
  const el = $('remote');
  el.srcObject = stream;
  el.play().catch(() => {});
  audioCtx = audioCtx || new AudioContext();
  audioCtx.resume().catch(() => {});
  const src = audioCtx.createMediaStreamSource(stream);
  analyser = audioCtx.createAnalyser();
  analyser.fftSize = 8192;
  src.connect(analyser);
}

function measure() {
  if (analyser) {
    const n = analyser.fftSize;
    const time = new Float32Array(n);
    analyser.getFloatTimeDomainData(time);
    let sum = 0;
    for (const v of time) sum += v * v;
    const rms = Math.sqrt(sum / n);
    const freq = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(freq);
    let best = 1;
    for (let i = 2; i < freq.length; i++) if (freq[i] > freq[best]) best = i;
    state.heardLevel = rms;
    state.heardHz = rms > 0.01 ? (best * audioCtx.sampleRate) / n : 0;
  }
  show();
}
setInterval(measure, 200);

function trackSession(s) {
  session = s;
  s.on('progress', () => {
    if (state.call === 'calling') state.call = 'ringing';
    show();
  });
  s.on('confirmed', () => {
    state.call = 'in call';
    log('call connected');
    show();
  });
  s.on('ended', (e) => {
    state.call = 'ended';
    log(`call ended (${e.cause})`);
    session = null;
    state.muted = false;
    state.held = false;
    show();
  });
  s.on('failed', (e) => {
    state.call = `failed: ${e.cause}`;
    log(`call failed (${e.cause})`);
    session = null;
    show();
  });
  s.on('hold', () => {
    state.held = true;
    show();
  });
  s.on('unhold', () => {
    state.held = false;
    show();
  });
  // Outgoing calls have their peer connection now; incoming ones once answered.
  const hook = (pc) => {
    pc.addEventListener('track', (ev) => listen(ev.streams[0] || new MediaStream([ev.track])));
  };
  if (s.connection) hook(s.connection);
  else s.on('peerconnection', (e) => hook(e.peerconnection));
}

const mediaOptions = {
  mediaConstraints: { audio: true, video: false },
  // The server is ICE-lite on a public (or loopback) address: no STUN server is needed.
  pcConfig: { iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' },
  sessionTimersExpires: 120,
};

function register(ev) {
  ev.preventDefault();
  if (ua) ua.stop();
  const user = $('user').value.trim();
  const domain = $('domain').value.trim();
  const socket = new JsSIP.WebSocketInterface($('ws').value.trim());
  ua = new JsSIP.UA({
    sockets: [socket],
    uri: `sip:${user}@${domain}`,
    authorization_user: user,
    password: $('password').value,
    register: true,
    session_timers: false,
    user_agent: 'Switchyard web phone (JsSIP)',
  });
  state.status = 'registering';
  ua.on('registered', () => {
    state.status = 'registered';
    log(`registered as ${user}@${domain}`);
    show();
  });
  ua.on('registrationFailed', (e) => {
    state.status = `failed: ${e.cause}`;
    log(`registration failed (${e.cause})`);
    show();
  });
  ua.on('disconnected', () => {
    if (state.status === 'registered') state.status = 'disconnected';
    show();
  });
  ua.on('newRTCSession', (e) => {
    if (e.originator !== 'remote') return;
    if (session) {
      e.session.terminate({ status_code: 486 });
      return;
    }
    trackSession(e.session);
    state.call = 'incoming';
    const from = e.request.from;
    $('caller').textContent = `${from.display_name || ''} ${from.uri.user}`.trim();
    log(`incoming call from ${from.uri.user}`);
    if ($('auto-answer').checked) answer();
    show();
  });
  ua.start();
  show();
}

function dial(ev) {
  ev.preventDefault();
  const target = $('number').value.trim();
  if (!target || !ua) return;
  state.call = 'calling';
  log(`calling ${target}`);
  trackSession(ua.call(target, mediaOptions));
  show();
}

function answer() {
  if (session && state.call === 'incoming') session.answer(mediaOptions);
}

function key(digit) {
  if (session && state.call === 'in call') {
    // RFC 4733 through the peer connection (the server also takes SIP INFO).
    session.sendDTMF(digit, { transportType: 'RFC2833', duration: 160, interToneGap: 100 });
    log(`sent ${digit}`);
  } else {
    $('number').value += digit;
  }
}

window.addEventListener('DOMContentLoaded', async () => {
  try {
    const cfg = await (await fetch('config.json')).json();
    if (!$('ws').value) $('ws').value = cfg.ws_url || '';
    if (!$('domain').value) $('domain').value = cfg.domain || location.hostname;
  } catch (e) {
    log('no server defaults: fill in the WebSocket address');
  }
  const params = new URLSearchParams(location.search);
  for (const f of ['user', 'password', 'domain', 'ws', 'number']) {
    if (params.get(f)) $(f).value = params.get(f);
  }
  if (params.get('auto_answer') === '1') $('auto-answer').checked = true;
  $('quiet').checked = params.get('quiet') === '1';
  $('remote').muted = $('quiet').checked;
  $('quiet').addEventListener('change', () => {
    $('remote').muted = $('quiet').checked;
  });
  $('login').addEventListener('submit', register);
  $('dialer').addEventListener('submit', dial);
  $('hangup').addEventListener('click', () => session && session.terminate());
  $('answer').addEventListener('click', answer);
  $('reject').addEventListener('click', () => session && session.terminate({ status_code: 486 }));
  $('mute').addEventListener('click', () => {
    if (!session) return;
    if (state.muted) session.unmute();
    else session.mute();
    state.muted = !state.muted;
    show();
  });
  $('hold').addEventListener('click', () => {
    if (!session) return;
    if (state.held) session.unhold();
    else session.hold();
  });
  for (const b of document.querySelectorAll('#keypad button')) {
    b.addEventListener('click', () => key(b.dataset.key));
  }
  show();
  if (params.get('autostart') === '1') $('login').requestSubmit();
});
