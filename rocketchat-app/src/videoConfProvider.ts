/**
 * The `mediafed` video-conference provider (Apps-Engine IVideoConfProvider).
 *
 * generateUrl opens (or finds) the mediafed call of the Rocket.Chat room, so
 * Matrix users of a linked room land in the same call; customizeUrl gives each
 * user a personal link with a short-lived join token and mic/cam start state.
 */
import { IHttp, IModify, IPersistence, IRead } from '@rocket.chat/apps-engine/definition/accessors';
import {
    IVideoConferenceOptions,
    IVideoConfProvider,
    VideoConfData,
    VideoConfDataExtended,
} from '@rocket.chat/apps-engine/definition/videoConfProviders';
import { IVideoConferenceUser } from '@rocket.chat/apps-engine/definition/videoConferences';
import { MediafedClient } from './mediafedClient';
import { MediafedSettings, readSettings } from './settings';

export type WebhookUrlSource = (read: IRead) => Promise<string>;

export function externalRoom(rid: string, settings: MediafedSettings): string {
    return settings.roomLinks.get(rid) || `rocketchat:${rid}`;
}

export class MediafedProvider implements IVideoConfProvider {
    public name = 'mediafed';

    public capabilities = { mic: true, cam: true, title: true };

    constructor(
        private readonly webhookUrl: WebhookUrlSource,
        private readonly now: () => number = () => Date.now() / 1000,
    ) {}

    public async isFullyConfigured(read: IRead, modify: IModify, http: IHttp, persis: IPersistence): Promise<boolean> {
        let settings: MediafedSettings;
        try {
            settings = await readSettings(read);
        } catch {
            return false;
        }
        try {
            return (await new MediafedClient(http, settings, this.now).probe()) === 200;
        } catch {
            return false;
        }
    }

    private async openCall(call: VideoConfData, read: IRead, http: IHttp) {
        const settings = await readSettings(read);
        const client = new MediafedClient(http, settings, this.now);
        const info = await client.createCall({
            external_room: externalRoom(call.rid, settings),
            external_call_id: call._id,
            title: call.title || '',
            webhook_url: await this.webhookUrl(read),
        });
        return { settings, client, info };
    }

    public async generateUrl(call: VideoConfData, read: IRead, modify: IModify, http: IHttp, persis: IPersistence): Promise<string> {
        const { info } = await this.openCall(call, read, http);
        return info.join_url;
    }

    public async customizeUrl(
        call: VideoConfDataExtended,
        user: IVideoConferenceUser | undefined,
        options: IVideoConferenceOptions | undefined,
        read: IRead,
        modify: IModify,
        http: IHttp,
        persis: IPersistence,
    ): Promise<string> {
        // Creating is idempotent per room: this finds the call generateUrl opened
        // (or a fresh one if mediafed ended it meanwhile).
        const { settings, client, info } = await this.openCall(call, read, http);
        const identity = user ? user.username || user._id : `guest-${Math.random().toString(36).slice(2, 10)}`;
        const joined = await client.join(info.call_id, {
            identity,
            name: (user && (user.name || user.username)) || 'Guest',
            mic: options && typeof options.mic === 'boolean' ? options.mic : settings.defaultMic,
            cam: options && typeof options.cam === 'boolean' ? options.cam : settings.defaultCam,
        });
        return joined.join_url;
    }
}
