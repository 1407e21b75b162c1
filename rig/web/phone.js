// A small JsSIP softphone: window.phone is what the tests drive, and the
// buttons on phone.html drive the same functions by hand.
// Media stays on loopback: local candidates other than 127.0.0.1 are dropped
// from the SDP the browser sends.
(function () {
  "use strict";
  const state = { ua: null, session: null, registered: false, events: [], incoming: null, remoteStream: null };

  function log(text) {
    state.events.push(text);
    const el = document.getElementById("log");
    if (el) el.textContent += text + "\n";
  }

  function loopbackOnly(sdp) {
    return sdp
      .split("\r\n")
      .filter((line) => !line.startsWith("a=candidate:") || / 127\.0\.0\.1 /.test(line))
      .join("\r\n");
  }

  function watch(session) {
    state.session = session;
    session.on("sdp", (e) => {
      if (e.originator === "local") e.sdp = loopbackOnly(e.sdp);
    });
    for (const name of ["progress", "accepted", "confirmed", "ended", "failed", "hold", "unhold", "reinvite", "update"]) {
      session.on(name, (e) => {
        const extra = e && e.cause ? " " + e.cause : e && e.originator ? " " + e.originator : "";
        log("session " + name + extra);
      });
    }
    session.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", (t) => {
        state.remoteStream = t.streams[0];
        const audio = document.getElementById("remote");
        if (audio) audio.srcObject = t.streams[0];
      });
    });
  }

  const media = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

  window.phone = {
    state,
    start(wsUrl, user, domain, password) {
      const socket = new JsSIP.WebSocketInterface(wsUrl);
      const ua = new JsSIP.UA({
        sockets: [socket],
        uri: "sip:" + user + "@" + domain,
        password: password || undefined,
        register: true,
        register_expires: 600,
        session_timers: false,
        user_agent: "jssip-e2e",
      });
      state.ua = ua;
      ua.on("connected", () => log("connected"));
      ua.on("disconnected", () => log("disconnected"));
      ua.on("registered", () => { state.registered = true; log("registered"); });
      ua.on("registrationFailed", (e) => log("registrationFailed " + e.cause));
      ua.on("newRTCSession", (e) => {
        if (e.originator === "remote") {
          state.incoming = e.session;
          watch(e.session);
          log("incoming " + e.request.call_id);
        }
      });
      ua.start();
    },
    // extraHeaders: header lines the INVITE carries besides JsSIP's own (e.g. "P-Preferred-Identity: <sip:...>")
    call(target, extraHeaders) {
      const session = state.ua.call(target, Object.assign({}, media, { extraHeaders: extraHeaders || [] }));
      watch(session);
      log("calling " + target);
      return session.id;
    },
    answer() { state.incoming.answer(media); },
    reject(code) { state.incoming.terminate({ status_code: code || 486 }); },
    // false while an earlier re-INVITE is still in progress (JsSIP then refuses)
    hold() { return state.session.hold(); },
    unhold() { return state.session.unhold(); },
    hangup() { state.session.terminate(); },
    // the Call-ID of the current call's INVITE (sent or received): what rtpengine knows the call by
    callId() { return state.session && state.session._request ? state.session._request.call_id : null; },
    // the INVITE of the current call as JsSIP sent it last (after a digest challenge: with the credentials)
    sentInvite() {
      const request = state.session && state.session.direction === "outgoing" ? state.session._request : null;
      return request ? request.toString() : null;
    },
    status() { return state.session ? state.session.status : -1; },
    // no re-INVITE or UPDATE of the current call waits for its answer (JsSIP's "hold"/"unhold" events
    // come when the re-INVITE is sent, not when it is answered)
    settled() { return !!state.session && state.session.isReadyToReOffer(); },
    // the SDP the browser got from the gateway for the current call (what crossed the network to it)
    remoteSdp() {
      const pc = state.session && state.session.connection;
      return pc && pc.remoteDescription ? pc.remoteDescription.sdp : null;
    },
    async stats() {
      const pc = state.session && state.session.connection;
      const out = { sent: 0, received: 0, ice: pc ? pc.iceConnectionState : "none" };
      if (!pc) return out;
      (await pc.getStats()).forEach((r) => {
        if (r.type === "outbound-rtp" && r.kind === "audio") out.sent += r.packetsSent || 0;
        if (r.type === "inbound-rtp" && r.kind === "audio") out.received += r.packetsReceived || 0;
      });
      return out;
    },
    stop() { if (state.ua) state.ua.stop(); },
  };
})();
