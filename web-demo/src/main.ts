// mediafed web-demo: a small call UI on livekit-client, talking to mediafed's
// LiveKit-compatible /rtc endpoint on the same origin.
//
// Join with the form (a token from the dev-only /dev/token endpoint) or with a
// link: ?token=JWT[&mic=1&cam=0] joins directly (the Rocket.Chat App hands out
// such links); &v0=1 connects with LiveKit's older two-connection protocol.
import {
  ConnectionQuality,
  LocalParticipant,
  Participant,
  RemoteTrack,
  Room,
  RoomEvent,
  Track,
  TrackPublication,
  VideoPresets,
} from "livekit-client";

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
};

const ui = {
  form: $<HTMLFormElement>("join-form"),
  room: $<HTMLInputElement>("room-input"),
  name: $<HTMLInputElement>("name-input"),
  startMic: $<HTMLInputElement>("start-mic"),
  startCam: $<HTMLInputElement>("start-cam"),
  joinButton: $<HTMLButtonElement>("join-button"),
  joinError: $<HTMLParagraphElement>("join-error"),
  call: $<HTMLElement>("call"),
  stage: $<HTMLElement>("stage"),
  grid: $<HTMLElement>("grid"),
  controls: $<HTMLElement>("controls"),
  mic: $<HTMLButtonElement>("mic-button"),
  cam: $<HTMLButtonElement>("cam-button"),
  screen: $<HTMLButtonElement>("screen-button"),
  micSelect: $<HTMLSelectElement>("mic-select"),
  camSelect: $<HTMLSelectElement>("cam-select"),
  speakerSelect: $<HTMLSelectElement>("speaker-select"),
  leave: $<HTMLButtonElement>("leave-button"),
  status: $<HTMLSpanElement>("status"),
  roomTitle: $<HTMLSpanElement>("room-title"),
};

const params = new URLSearchParams(location.search);
const flag = (name: string, fallback: boolean): boolean => {
  const value = params.get(name);
  return value === null ? fallback : value === "1" || value === "true";
};

const room = new Room({
  adaptiveStream: true,
  dynacast: true,
  videoCaptureDefaults: { resolution: VideoPresets.h720.resolution },
  // ?v0=1: signal protocol v0 (two peer connections) instead of v1 (one)
  singlePeerConnection: !flag("v0", false),
});
// For tests and the curious: the live Room object.
(window as unknown as { mediafedDemo: { room: Room } }).mediafedDemo = { room };

function signalUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}`;
}

function setStatus(text: string): void {
  ui.status.textContent = text;
}

function showError(text: string): void {
  ui.joinError.textContent = text;
  ui.joinError.hidden = false;
}

async function devToken(roomName: string, name: string): Promise<string> {
  const query = new URLSearchParams({ room: roomName, name });
  const resp = await fetch(`/dev/token?${query}`);
  if (resp.status === 404) {
    throw new Error("this server hands out no tokens here; ask for a join link");
  }
  const body = (await resp.json()) as { token?: string; error?: string };
  if (!resp.ok || !body.token) throw new Error(body.error ?? `token request failed (${resp.status})`);
  return body.token;
}

async function join(token: string, mic: boolean, cam: boolean): Promise<void> {
  ui.joinButton.disabled = true;
  setStatus("connecting…");
  try {
    // ?relay=1: only TURN relays (the server's ice_servers), to try a TURN set-up
    const relay = flag("relay", false);
    await room.connect(signalUrl(), token, relay ? { rtcConfig: { iceTransportPolicy: "relay" } } : {});
  } catch (err) {
    ui.joinButton.disabled = false;
    setStatus("");
    ui.form.hidden = false;
    showError(`could not join: ${(err as Error).message}`);
    return;
  }
  ui.form.hidden = true;
  ui.call.hidden = false;
  ui.controls.hidden = false;
  ui.roomTitle.textContent = room.name;
  setStatus("connected");
  render();
  await Promise.allSettled([
    room.localParticipant.setMicrophoneEnabled(mic),
    room.localParticipant.setCameraEnabled(cam),
  ]);
  await refreshDevices();
  render();
}

// ---- tiles -------------------------------------------------------------

const tiles = new Map<string, HTMLElement>();

function tileKey(p: Participant, screen: boolean): string {
  return `${p.identity}\u0000${screen ? "screen" : "camera"}`;
}

function makeTile(p: Participant, screen: boolean): HTMLElement {
  const tile = document.createElement("div");
  tile.className = screen ? "tile screen" : "tile";
  tile.dataset.identity = p.identity;
  tile.dataset.source = screen ? "screen_share" : "camera";
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // audio plays through separate <audio> elements
  const avatar = document.createElement("div");
  avatar.className = "avatar";
  const label = document.createElement("div");
  label.className = "label";
  label.innerHTML =
    '<span class="name"></span><span class="muted" title="microphone off" hidden>🔇</span>' +
    '<span class="quality" title="connection quality"><i></i><i></i><i></i></span>';
  tile.append(video, avatar, label);
  return tile;
}

function displayName(p: Participant): string {
  const base = p.name || p.identity;
  return p instanceof LocalParticipant ? `${base} (you)` : base;
}

function updateTile(tile: HTMLElement, p: Participant, pub: TrackPublication | undefined): void {
  const video = tile.querySelector("video") as HTMLVideoElement;
  const track = pub && !pub.isMuted ? pub.track : undefined;
  const attached = (video as HTMLVideoElement & { _track?: Track })._track;
  if (attached !== track) {
    attached?.detach(video);
    track?.attach(video);
    (video as HTMLVideoElement & { _track?: Track })._track = track;
  }
  video.hidden = !track;
  const avatar = tile.querySelector(".avatar") as HTMLElement;
  avatar.hidden = !!track;
  avatar.textContent = (p.name || p.identity).slice(0, 1).toUpperCase();
  const name = tile.querySelector(".name") as HTMLElement;
  name.textContent = tile.dataset.source === "screen_share" ? `${displayName(p)} — screen` : displayName(p);
  (tile.querySelector(".muted") as HTMLElement).hidden = p.isMicrophoneEnabled;
  const quality = tile.querySelector(".quality") as HTMLElement;
  quality.dataset.quality = p.connectionQuality ?? ConnectionQuality.Unknown;
  tile.classList.toggle("speaking", p.isSpeaking);
}

function render(): void {
  if (room.state === "disconnected") return;
  const people: Participant[] = [room.localParticipant, ...room.remoteParticipants.values()];
  const wanted = new Set<string>();
  let screenTile: HTMLElement | undefined;
  for (const p of people) {
    const cameraKey = tileKey(p, false);
    wanted.add(cameraKey);
    let tile = tiles.get(cameraKey);
    if (!tile) {
      tile = makeTile(p, false);
      tiles.set(cameraKey, tile);
      ui.grid.append(tile);
    }
    updateTile(tile, p, p.getTrackPublication(Track.Source.Camera));
    const screenPub = p.getTrackPublication(Track.Source.ScreenShare);
    if (screenPub?.track) {
      const key = tileKey(p, true);
      wanted.add(key);
      let screen = tiles.get(key);
      if (!screen) {
        screen = makeTile(p, true);
        tiles.set(key, screen);
      }
      updateTile(screen, p, screenPub);
      screenTile ??= screen;
    }
  }
  for (const [key, tile] of tiles) {
    if (!wanted.has(key)) {
      (tile.querySelector("video") as HTMLVideoElement & { _track?: Track })._track?.detach();
      tile.remove();
      tiles.delete(key);
    }
  }
  // the (first) screenshare is shown large on the stage, the rest in the grid
  for (const [key, tile] of tiles) {
    if (key.endsWith("screen") && tile !== screenTile && tile.parentElement !== ui.grid) {
      ui.grid.append(tile);
    }
  }
  if (screenTile && screenTile.parentElement !== ui.stage) ui.stage.replaceChildren(screenTile);
  ui.stage.hidden = !screenTile;
  const local = room.localParticipant;
  ui.mic.setAttribute("aria-pressed", String(local.isMicrophoneEnabled));
  ui.cam.setAttribute("aria-pressed", String(local.isCameraEnabled));
  ui.screen.setAttribute("aria-pressed", String(local.isScreenShareEnabled));
}

// ---- remote audio --------------------------------------------------------

const audioElements = new Map<string, HTMLMediaElement>();

function onSubscribed(track: RemoteTrack, pub: TrackPublication): void {
  if (track.kind === Track.Kind.Audio) {
    const el = track.attach();
    el.dataset.trackSid = pub.trackSid;
    document.body.append(el);
    audioElements.set(pub.trackSid, el);
  }
  render();
}

function onUnsubscribed(track: RemoteTrack, pub: TrackPublication): void {
  const el = audioElements.get(pub.trackSid);
  if (el) {
    track.detach(el);
    el.remove();
    audioElements.delete(pub.trackSid);
  }
  render();
}

// ---- devices -------------------------------------------------------------

async function fillSelect(select: HTMLSelectElement, kind: MediaDeviceKind): Promise<void> {
  let devices: MediaDeviceInfo[] = [];
  try {
    devices = await Room.getLocalDevices(kind, false);
  } catch {
    devices = [];
  }
  const active = room.getActiveDevice(kind);
  select.replaceChildren(
    ...devices.map((d, i) => {
      const option = document.createElement("option");
      option.value = d.deviceId;
      option.textContent = d.label || `${kind} ${i + 1}`;
      option.selected = d.deviceId === active;
      return option;
    }),
  );
  select.hidden = devices.length === 0;
}

async function refreshDevices(): Promise<void> {
  await fillSelect(ui.micSelect, "audioinput");
  await fillSelect(ui.camSelect, "videoinput");
  await fillSelect(ui.speakerSelect, "audiooutput");
}

for (const [select, kind] of [
  [ui.micSelect, "audioinput"],
  [ui.camSelect, "videoinput"],
  [ui.speakerSelect, "audiooutput"],
] as const) {
  select.addEventListener("change", () => {
    void room.switchActiveDevice(kind, select.value).catch((err: Error) => setStatus(err.message));
  });
}

// ---- controls --------------------------------------------------------------

async function toggle(action: () => Promise<unknown>): Promise<void> {
  try {
    await action();
  } catch (err) {
    setStatus((err as Error).message);
  }
  render();
}

ui.mic.addEventListener("click", () =>
  void toggle(() => room.localParticipant.setMicrophoneEnabled(!room.localParticipant.isMicrophoneEnabled)),
);
ui.cam.addEventListener("click", () =>
  void toggle(() => room.localParticipant.setCameraEnabled(!room.localParticipant.isCameraEnabled)),
);
ui.screen.addEventListener("click", () =>
  void toggle(() =>
    room.localParticipant.setScreenShareEnabled(!room.localParticipant.isScreenShareEnabled, { audio: true }),
  ),
);
ui.leave.addEventListener("click", () => void room.disconnect());

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  ui.joinError.hidden = true;
  const roomName = ui.room.value.trim();
  const name = ui.name.value.trim();
  localStorage.setItem("mediafed.name", name);
  history.replaceState(null, "", `?room=${encodeURIComponent(roomName)}`);
  devToken(roomName, name)
    .then((token) => join(token, ui.startMic.checked, ui.startCam.checked))
    .catch((err: Error) => showError(err.message));
});

room
  .on(RoomEvent.TrackSubscribed, onSubscribed)
  .on(RoomEvent.TrackUnsubscribed, onUnsubscribed)
  .on(RoomEvent.ParticipantConnected, render)
  .on(RoomEvent.ParticipantDisconnected, render)
  .on(RoomEvent.ParticipantNameChanged, render)
  .on(RoomEvent.TrackMuted, render)
  .on(RoomEvent.TrackUnmuted, render)
  .on(RoomEvent.TrackPublished, render)
  .on(RoomEvent.TrackUnpublished, render)
  .on(RoomEvent.LocalTrackPublished, render)
  .on(RoomEvent.LocalTrackUnpublished, render)
  .on(RoomEvent.ActiveSpeakersChanged, render)
  .on(RoomEvent.ConnectionQualityChanged, render)
  .on(RoomEvent.MediaDevicesChanged, () => void refreshDevices())
  .on(RoomEvent.Reconnecting, () => setStatus("reconnecting…"))
  .on(RoomEvent.Reconnected, () => setStatus("connected"))
  .on(RoomEvent.AudioPlaybackStatusChanged, () => {
    if (!room.canPlaybackAudio) setStatus("click anywhere to hear the call");
  })
  .on(RoomEvent.Disconnected, (reason) => {
    for (const tile of tiles.values()) tile.remove();
    tiles.clear();
    ui.stage.hidden = true;
    ui.call.hidden = true;
    ui.controls.hidden = true;
    ui.form.hidden = false;
    ui.joinButton.disabled = false;
    setStatus(`left the call${reason !== undefined ? ` (${String(reason)})` : ""}`);
  });

document.addEventListener("click", () => {
  if (!room.canPlaybackAudio) void room.startAudio();
});

// ---- start -------------------------------------------------------------------

ui.room.value = params.get("room") ?? "";
ui.name.value = localStorage.getItem("mediafed.name") ?? "";
const linkToken = params.get("token");
if (linkToken) {
  ui.form.hidden = true;
  void join(linkToken, flag("mic", true), flag("cam", true));
}
