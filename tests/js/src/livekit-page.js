// Plain LiveKit rooms for tests that need browser-side control livekit-client
// has and the web-demo does not expose: publishing with a chosen codec and
// scalability mode, and asking for a frame rate per subscribed video
// (RemoteTrackPublication.setVideoFPS). Driven as `mf.lk`.
import { Room, RoomEvent, Track, VideoPresets } from "livekit-client";

const rooms = new Map(); // name -> Room

export function lk(note) {
  async function connect(name, url, token, publish = null) {
    const room = new Room({ adaptiveStream: false, dynacast: true });
    room.on(RoomEvent.TrackSubscribed, (track, _pub, who) =>
      note(`${name}: subscribed to ${who.identity}'s ${track.kind}`),
    );
    room.on(RoomEvent.Disconnected, (why) => note(`${name}: disconnected ${why}`));
    await room.connect(url, token);
    rooms.set(name, room);
    if (publish) {
      await room.localParticipant.setMicrophoneEnabled(true);
      await room.localParticipant.setCameraEnabled(
        true,
        { resolution: VideoPresets.h720.resolution },
        { videoCodec: publish.codec, scalabilityMode: publish.scalabilityMode },
      );
    }
    note(`${name}: connected as ${room.localParticipant.identity}`);
  }

  function setFps(name, fps) {
    for (const p of rooms.get(name).remoteParticipants.values()) {
      for (const pub of p.videoTrackPublications.values()) pub.setVideoFPS(fps);
    }
  }

  // Per remote video: frames decoded, the decoder's frame rate, and its size.
  async function videos(name) {
    const out = {};
    for (const p of rooms.get(name).remoteParticipants.values()) {
      for (const pub of p.videoTrackPublications.values()) {
        const report = await pub.track?.getRTCStatsReport();
        report?.forEach((s) => {
          if (s.type !== "inbound-rtp" || s.kind !== Track.Kind.Video) return;
          out[`${p.identity}/${pub.trackSid}`] = {
            frames: s.framesDecoded ?? 0,
            fps: s.framesPerSecond ?? 0,
            width: s.frameWidth ?? 0,
            height: s.frameHeight ?? 0,
            codec: pub.mimeType,
          };
        });
      }
    }
    return out;
  }

  async function disconnect(name) {
    await rooms.get(name)?.disconnect();
    rooms.delete(name);
  }

  return { connect, setFps, videos, disconnect };
}
