// An Element-Call-like MatrixRTC client (multi-SFU, as Element Call 0.17 and
// later): it announces its membership with matrix-js-sdk's MatrixRTCSession,
// publishes camera and microphone on its own homeserver's focus, and subscribes
// on the focus of every other member, each with a token from that focus's
// /sfu/get proven by an OpenID token of its own homeserver. Driven as `mf.rtc`.
import { Room, RoomEvent, Track } from "livekit-client";
import { MatrixRTCSessionEvent } from "matrix-js-sdk/lib/matrixrtc/MatrixRTCSession.js";

const connections = new Map(); // focus URL -> { room: Room, publishing: bool, error }
let session = null;
let ownFocus = null;
let matrixRoomId = null;

export function rtc(getClient, note) {
  async function sfuGet(focusUrl) {
    const client = getClient();
    const openid = await client.getOpenIdToken();
    const resp = await fetch(`${focusUrl}/sfu/get`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        room: matrixRoomId,
        openid_token: openid,
        device_id: client.getDeviceId(),
      }),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(`${focusUrl}/sfu/get answered ${resp.status}: ${text}`);
    return JSON.parse(text);
  }

  async function connect(focusUrl, publish) {
    const entry = { room: null, publishing: publish, error: null };
    connections.set(focusUrl, entry);
    try {
      const grant = await sfuGet(focusUrl);
      const room = new Room({ adaptiveStream: false, dynacast: true });
      room.on(RoomEvent.Reconnecting, () => note(`${focusUrl}: reconnecting`));
      room.on(RoomEvent.Reconnected, () => note(`${focusUrl}: reconnected`));
      room.on(RoomEvent.Disconnected, (why) => note(`${focusUrl}: disconnected ${why}`));
      room.on(RoomEvent.TrackSubscribed, (track, _pub, who) =>
        note(`${focusUrl}: subscribed to ${who.identity}'s ${track.kind}`),
      );
      entry.room = room;
      await room.connect(grant.url, grant.jwt);
      note(`${focusUrl}: connected to ${grant.url} as ${room.localParticipant.identity}`);
      if (publish) await room.localParticipant.enableCameraAndMicrophone();
    } catch (err) {
      entry.error = String(err);
      note(`${focusUrl}: ${err}`);
    }
  }

  // Subscribe on each focus other members publish on (their first preferred one).
  function follow() {
    for (const membership of session.memberships) {
      const transport = membership.getTransport(session.memberships[0]);
      const url = transport?.livekit_service_url;
      if (url && !connections.has(url)) {
        note(`member ${membership.sender} publishes on ${url}: subscribing there`);
        connect(url, false);
      }
    }
  }

  async function join(roomId, focusUrl) {
    const client = getClient();
    matrixRoomId = roomId;
    ownFocus = focusUrl;
    const room = client.getRoom(roomId);
    if (!room) throw new Error(`${roomId} is not in the client's store`);
    session = client.matrixRTC.getRoomSession(room);
    session.on(MatrixRTCSessionEvent.MembershipsChanged, follow);
    await connect(focusUrl, true);
    session.joinRoomSession(
      [{ type: "livekit", livekit_service_url: focusUrl, livekit_alias: roomId }],
      { type: "livekit", focus_selection: "multi_sfu" },
    );
    follow();
  }

  async function leave() {
    await session?.leaveRoomSession(5000);
    for (const { room } of connections.values()) await room?.disconnect();
  }

  // Per focus: connection state, and per remote participant the video frames
  // decoded and audio packets received.
  async function seen() {
    const out = {};
    for (const [url, { room, error }] of connections) {
      const remote = {};
      if (room) {
        for (const p of room.remoteParticipants.values()) {
          const got = { frames: 0, audioPackets: 0 };
          for (const pub of p.trackPublications.values()) {
            const track = pub.track;
            if (!track) continue;
            const report = await track.getRTCStatsReport();
            report?.forEach((s) => {
              if (s.type !== "inbound-rtp") return;
              if (track.kind === Track.Kind.Video) got.frames += s.framesDecoded ?? 0;
              else got.audioPackets += s.packetsReceived ?? 0;
            });
          }
          remote[p.identity] = got;
        }
      }
      out[url] = {
        state: room?.state ?? null,
        identity: room?.localParticipant.identity ?? null,
        canPublish: room?.localParticipant.permissions?.canPublish ?? null,
        published: room ? room.localParticipant.trackPublications.size : 0,
        error,
        remote,
      };
    }
    return out;
  }

  return { join, leave, seen, own: () => ownFocus };
}
