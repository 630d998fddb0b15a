/**
 * The App's public endpoint for mediafed's signed call events (webhooks).
 *
 * mediafed POSTs `{id, event, call_id, external_call_id, room, identity?, name?,
 * timestamp}` with `X-Mediafed-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
 * "<t>.<body>")>` and `X-Mediafed-Key`. Unsigned, badly signed, stale (more than
 * 5 minutes) and replayed (id seen before) requests are refused. A joined
 * participant is added to the Rocket.Chat call; "call_ended" ends it, like
 * Apps.BigBlueButton's hook does.
 */
import {
    HttpStatusCode,
    IHttp,
    IModify,
    IPersistence,
    IRead,
} from '@rocket.chat/apps-engine/definition/accessors';
import { ApiEndpoint, IApiEndpointInfo, IApiRequest, IApiResponse } from '@rocket.chat/apps-engine/definition/api';
import { IApp } from '@rocket.chat/apps-engine/definition/IApp';
import { RocketChatAssociationModel, RocketChatAssociationRecord } from '@rocket.chat/apps-engine/definition/metadata';
import { VideoConferenceStatus } from '@rocket.chat/apps-engine/definition/videoConferences/IVideoConference';
import { KEY_HEADER, SIGNATURE_HEADER, SignatureError, constantTimeEqual, verifyWebhook } from './crypto';
import { MediafedSettings, readSettings } from './settings';

export const EVENTS = ['participant_joined', 'participant_left', 'call_ended'] as const;

export interface MediafedEvent {
    id: string;
    event: (typeof EVENTS)[number];
    call_id: string;
    external_call_id: string;
    room: string;
    identity?: string;
    name?: string;
    timestamp: number;
}

function header(request: IApiRequest, name: string): string | undefined {
    for (const key of Object.keys(request.headers || {})) {
        if (key.toLowerCase() === name) {
            return request.headers[key];
        }
    }
    return undefined;
}

/**
 * The signed bytes. Rocket.Chat hands the App parsed JSON; mediafed sends
 * compact JSON, so re-serializing gives back the same text.
 */
export function bodyText(content: unknown): string {
    return typeof content === 'string' ? content : JSON.stringify(content);
}

function parseEvent(text: string): MediafedEvent | undefined {
    let event: any;
    try {
        event = JSON.parse(text);
    } catch {
        return undefined;
    }
    if (
        !event ||
        typeof event.id !== 'string' ||
        !event.id ||
        !EVENTS.includes(event.event) ||
        typeof event.call_id !== 'string' ||
        typeof event.external_call_id !== 'string'
    ) {
        return undefined;
    }
    return event as MediafedEvent;
}

export class WebhookEndpoint extends ApiEndpoint {
    public path = 'events';

    constructor(app: IApp, private readonly now: () => number = () => Date.now() / 1000) {
        super(app);
    }

    private answer(status: HttpStatusCode, content: { [key: string]: unknown }): IApiResponse {
        return this.json({ status, content });
    }

    public async post(
        request: IApiRequest,
        endpoint: IApiEndpointInfo,
        read: IRead,
        modify: IModify,
        http: IHttp,
        persis: IPersistence,
    ): Promise<IApiResponse> {
        let settings: MediafedSettings;
        try {
            settings = await readSettings(read);
        } catch (error) {
            return this.answer(HttpStatusCode.SERVICE_UNAVAILABLE, { error: `the App is not configured: ${(error as Error).message}` });
        }
        if (!constantTimeEqual(header(request, KEY_HEADER) || '', settings.apiKey)) {
            return this.answer(HttpStatusCode.UNAUTHORIZED, { error: 'X-Mediafed-Key is not the API key set in the App' });
        }
        const text = bodyText(request.content);
        try {
            verifyWebhook(header(request, SIGNATURE_HEADER), text, settings.apiSecret, this.now());
        } catch (error) {
            if (error instanceof SignatureError) {
                return this.answer(HttpStatusCode.UNAUTHORIZED, { error: error.message });
            }
            throw error;
        }
        const event = parseEvent(text);
        if (!event) {
            return this.answer(HttpStatusCode.BAD_REQUEST, { error: 'not a mediafed call event' });
        }
        const seen = new RocketChatAssociationRecord(RocketChatAssociationModel.MISC, `mediafed-event:${event.id}`);
        const earlier = await read.getPersistenceReader().readByAssociation(seen);
        if (earlier.length > 0) {
            return this.answer(HttpStatusCode.CONFLICT, { error: `event ${event.id} was already received` });
        }
        await persis.createWithAssociation({ id: event.id, receivedAt: this.now() }, seen);

        if (!event.external_call_id) {
            return this.answer(HttpStatusCode.OK, { ok: true, ignored: 'no Rocket.Chat call' });
        }
        const call = await read.getVideoConferenceReader().getById(event.external_call_id);
        if (!call) {
            return this.answer(HttpStatusCode.NOT_FOUND, { error: `no Rocket.Chat call ${event.external_call_id}` });
        }
        const extender = await modify.getExtender().extendVideoConference(call._id);
        switch (event.event) {
            case 'participant_joined': {
                const user = event.identity ? await read.getUserReader().getByUsername(event.identity) : undefined;
                if (!user) {
                    // A Matrix user or a guest: no Rocket.Chat account to list.
                    return this.answer(HttpStatusCode.OK, { ok: true, ignored: 'not a Rocket.Chat user' });
                }
                extender.addUser(user.id, new Date(event.timestamp * 1000));
                if (call.status === VideoConferenceStatus.CALLING) {
                    extender.setStatus(VideoConferenceStatus.STARTED);
                }
                break;
            }
            case 'call_ended':
                extender.setStatus(VideoConferenceStatus.ENDED);
                extender.setEndedAt(new Date(event.timestamp * 1000));
                break;
            default:
                // Rocket.Chat keeps everyone who was in a call; nothing to undo on leave.
                return this.answer(HttpStatusCode.OK, { ok: true });
        }
        await modify.getExtender().finish(extender);
        return this.answer(HttpStatusCode.OK, { ok: true });
    }
}
