// Matrix clients for mediafed's tests, on matrix-js-sdk (the SDK of Element Web
// and Element Call) with Chromium's fake camera and microphone: a classic VoIP
// client placing and answering 1:1 calls (m.call.*), and an Element-Call-like
// MatrixRTC client (`mf.rtc`, element-call.js). The tests drive it through
// `window.mf` with Playwright.
import {
  CallEvent,
  ClientEvent,
  createClient,
  createNewMatrixCall,
} from "matrix-js-sdk";
import { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler.js";

import { rtc } from "./element-call.js";
import { lk } from "./livekit-page.js";

const log = [];
const incoming = [];
let client = null;
let call = null;

function note(what) {
  log.push(`${new Date().toISOString().slice(11, 23)} ${what}`);
}

function watch(c) {
  c.on(CallEvent.State, (state, old) => note(`call ${c.callId} ${old} -> ${state}`));
  c.on(CallEvent.Hangup, () => note(`call ${c.callId} hung up: ${c.hangupReason}`));
  c.on(CallEvent.Error, (err) => note(`call ${c.callId} error: ${err.code} ${err.message}`));
}

async function start({ baseUrl, userId, accessToken, deviceId }) {
  client = createClient({ baseUrl, userId, accessToken, deviceId });
  client.on(CallEventHandlerEvent.Incoming, (c) => {
    note(`incoming call ${c.callId} from ${c.getOpponentMember()?.userId}`);
    watch(c);
    incoming.push(c);
  });
  const prepared = new Promise((resolve) => {
    client.on(ClientEvent.Sync, (state) => {
      if (state === "PREPARED" || state === "SYNCING") resolve();
    });
  });
  await client.startClient({ initialSyncLimit: 1 });
  await prepared;
  note(`started as ${userId}, voip ${client.supportsVoip()}`);
}

async function place(roomId, invitee, video = true) {
  call = createNewMatrixCall(client, roomId, { invitee });
  if (call === null) throw new Error("matrix-js-sdk cannot make calls here");
  watch(call);
  if (video) await call.placeVideoCall();
  else await call.placeVoiceCall();
  return call.callId;
}

async function answer() {
  call = incoming[incoming.length - 1];
  if (!call) throw new Error("no incoming call");
  await call.answer(true, true);
  return call.callId;
}

function state() {
  if (!call) return { state: null, incoming: incoming.length };
  return { state: call.state, reason: call.hangupReason ?? null, incoming: incoming.length };
}

// What this side receives and sends, from its peer connection's statistics.
async function media() {
  const totals = {
    framesDecoded: 0,
    videoStreamsDecoding: 0,
    audioPackets: 0,
    videoPacketsSent: 0,
    audioPacketsSent: 0,
  };
  const pc = call?.peerConn;
  if (!pc) return totals;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      totals.framesDecoded += s.framesDecoded ?? 0;
      if ((s.framesDecoded ?? 0) > 10) totals.videoStreamsDecoding += 1;
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") totals.audioPackets += s.packetsReceived ?? 0;
    if (s.type === "outbound-rtp" && s.kind === "video") totals.videoPacketsSent += s.packetsSent ?? 0;
    if (s.type === "outbound-rtp" && s.kind === "audio") totals.audioPacketsSent += s.packetsSent ?? 0;
  });
  return totals;
}

function hangup() {
  call?.hangup("user_hangup", false);
}

async function stop() {
  client?.stopClient();
}

window.mf = { start, place, answer, state, media, hangup, stop, log, rtc: rtc(() => client, note), lk: lk(note) };
