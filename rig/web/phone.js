// A small JsSIP softphone: window.phone is what the tests drive, and the
// buttons on phone.html drive the same functions by hand.
// Media stays on loopback: local candidates other than 127.0.0.1 are dropped
// from the SDP the browser sends.
(function () {
  "use strict";
  const state = { ua: null, session: null, registered: false, events: [], incoming: null, remoteStream: null, dtmf: [] };

  function log(text) {
    state.events.push(text);
    const el = document.getElementById("log");
    if (el) el.textContent += text + "\n";
  }

  function loopbackOnly(sdp) {
    const mine = state.ipv6 ? / ::1 / : / 127\.0\.0\.1 /;
    return sdp
      .split("\r\n")
      .filter((line) => !line.startsWith("a=candidate:") || mine.test(line))
      .join("\r\n");
  }

  // The camera and microphone a call sends: taken here, not by JsSIP, so that a fake device that does not
  // start at once (Chromium's, on a loaded machine: "NotReadableError") is asked again, each failure
  // logged, before the call is placed or answered.  Released when the session ends.
  async function localStream() {
    for (let attempt = 1; ; attempt++) {
      try {
        return await navigator.mediaDevices.getUserMedia(media.mediaConstraints);
      } catch (e) {
        log("getUserMedia attempt " + attempt + " failed " + e.name + ": " + e.message);
        if (attempt === 3) throw e;
        await new Promise((resolve) => setTimeout(resolve, 300 * attempt));
      }
    }
  }

  function releaseWithSession(session, stream) {
    const release = () => stream.getTracks().forEach((track) => track.stop());
    session.on("ended", release);
    session.on("failed", release);
  }

  function watch(session, stream) {
    state.session = session;
    if (stream) releaseWithSession(session, stream);
    session.on("sdp", (e) => {
      // with setMedia's codecs, what the browser sends and what it takes in name only those
      const sdp = state.codecs ? onlyCodecs(e.sdp, state.codecs) : e.sdp;
      e.sdp = e.originator === "local" ? loopbackOnly(sdp) : sdp;
    });
    for (const name of ["progress", "accepted", "confirmed", "ended", "failed", "hold", "unhold", "reinvite", "update"]) {
      session.on(name, (e) => {
        const extra = e && e.cause ? " " + e.cause : e && e.originator ? " " + e.originator : "";
        // a failure also says who ended it and with which final reply, if one came
        const why = name === "failed" && e ? " (" + e.originator + (e.message && e.message.status_code ? " " + e.message.status_code : "") + ")" : "";
        log("session " + name + extra + why);
      });
    }
    // the browser's own media failures say why (getUserMedia's: localStream)
    for (const name of ["peerconnection:createofferfailed", "peerconnection:createanswerfailed",
                        "peerconnection:setlocaldescriptionfailed", "peerconnection:setremotedescriptionfailed"]) {
      session.on(name, (e) => log(name + " " + (e && (e.name || "") + ": " + (e.message || e))));
    }
    // a DTMF digit that came as SIP INFO (JsSIP's newDTMF; a browser cannot see RFC 4733 events it receives)
    session.on("newDTMF", (e) => {
      if (e.originator === "remote") state.dtmf.push(e.dtmf.tone);
    });
    session.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", (t) => {
        state.remoteStream = t.streams[0];
        const audio = document.getElementById("remote");
        if (audio) audio.srcObject = t.streams[0];
      });
    });
  }

  const media = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

  // The audio m-line's formats cut to the codecs named (e.g. ["opus"], ["opus", "PCMU"]), telephone-event
  // kept: a browser that offers or accepts only those.
  function onlyCodecs(sdp, names) {
    const lines = sdp.split("\r\n");
    const keep = new Set();
    const wanted = names.concat(["telephone-event"]).map((n) => n.toLowerCase());
    for (const line of lines) {
      const m = /^a=rtpmap:(\d+) ([^/]+)\//.exec(line);
      if (m && wanted.includes(m[2].toLowerCase())) keep.add(m[1]);
    }
    let audio = false;
    return lines
      .filter((line) => {
        if (line.startsWith("m=")) audio = line.startsWith("m=audio");
        if (!audio) return true;
        const pt = /^a=(?:rtpmap|fmtp|rtcp-fb):(\d+)[ ]/.exec(line);
        return !pt || keep.has(pt[1]);
      })
      .map((line) => {
        if (!line.startsWith("m=audio")) return line;
        const parts = line.split(" ");
        return parts.slice(0, 3).concat(parts.slice(3).filter((pt) => keep.has(pt))).join(" ");
      })
      .join("\r\n");
  }

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
    async call(target, extraHeaders) {
      const stream = await localStream();
      const session = state.ua.call(target, Object.assign({}, media, { mediaStream: stream, extraHeaders: extraHeaders || [] }));
      watch(session, stream);
      log("calling " + target);
      return session.id;
    },
    async answer() {
      const session = state.incoming;
      const stream = await localStream();
      releaseWithSession(session, stream);
      session.answer(Object.assign({}, media, { mediaStream: stream }));
    },
    // what the next calls and answers ask for: {audio, video} (video: Chromium's fake camera), and the
    // audio codecs the browser offers and accepts (null: all it has)
    // the loopback address family of the candidates the browser sends: IPv6 (::1) or IPv4 (127.0.0.1)
    useIPv6(on) { state.ipv6 = !!on; },
    setMedia(audio, video, codecs) {
      media.mediaConstraints = { audio: !!audio, video: !!video };
      state.codecs = codecs || null;
    },
    // DTMF: transport "INFO" (JsSIP's default: SIP INFO) or "RFC2833" (RFC 4733 events in RTP)
    dtmf(tones, transport) {
      state.session.sendDTMF(tones, { transportType: transport, duration: 160, interToneGap: 200 });
    },
    // re-INVITE with new ICE credentials (an ICE restart)
    iceRestart() { return state.session.renegotiate({ rtcOfferConstraints: { iceRestart: true } }); },
    // a video track added to (or removed from) the call, by re-INVITE
    async addVideo() {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      const pc = state.session.connection;
      for (const track of stream.getVideoTracks()) pc.addTrack(track, stream);
      return state.session.renegotiate();
    },
    removeVideo() {
      const pc = state.session.connection;
      for (const sender of pc.getSenders()) if (sender.track && sender.track.kind === "video") pc.removeTrack(sender);
      return state.session.renegotiate();
    },
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
      const out = {
        sent: 0, received: 0, ice: pc ? pc.iceConnectionState : "none",
        videoSent: 0, videoReceived: 0, framesEncoded: 0, framesDecoded: 0, codecs: [],
      };
      if (!pc) return out;
      const stats = await pc.getStats();
      stats.forEach((r) => {
        if (r.type === "outbound-rtp" && r.kind === "audio") out.sent += r.packetsSent || 0;
        if (r.type === "inbound-rtp" && r.kind === "audio") out.received += r.packetsReceived || 0;
        if (r.type === "outbound-rtp" && r.kind === "video") {
          out.videoSent += r.packetsSent || 0;
          out.framesEncoded += r.framesEncoded || 0;
        }
        if (r.type === "inbound-rtp" && r.kind === "video") {
          out.videoReceived += r.packetsReceived || 0;
          out.framesDecoded += r.framesDecoded || 0;
        }
        if ((r.type === "outbound-rtp" || r.type === "inbound-rtp") && r.codecId && stats.get(r.codecId)) {
          out.codecs.push(r.type.split("-")[0] + " " + r.kind + " " + stats.get(r.codecId).mimeType);
        }
      });
      return out;
    },
    // the DTMF digits that came as SIP INFO
    dtmfReceived() { return state.dtmf.join(""); },
    stop() { if (state.ua) state.ua.stop(); },
  };
})();
