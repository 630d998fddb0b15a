/** Hand-made stand-ins for the Apps-Engine accessors (read, modify, http, persistence). */
import { IHttp, IHttpRequest, IHttpResponse, IModify, IPersistence, IRead, RequestMethod } from '@rocket.chat/apps-engine/definition/accessors';
import { RocketChatAssociationRecord } from '@rocket.chat/apps-engine/definition/metadata';
import { SettingId } from '../src/settings';

export const KEY = 'apikey';
export const SECRET = 'a-long-enough-api-secret-for-tests-0123456789';

export function goodSettings(overrides: Partial<Record<SettingId, unknown>> = {}): Record<string, unknown> {
    return {
        [SettingId.Url]: 'http://mediafed.test:7880/',
        [SettingId.ApiKey]: KEY,
        [SettingId.ApiSecret]: SECRET,
        [SettingId.DefaultMic]: true,
        [SettingId.DefaultCam]: false,
        [SettingId.RoomLinks]: '',
        ...overrides,
    };
}

export interface FakeWorld {
    settings: Record<string, unknown>;
    siteUrl: string;
    users: Record<string, { id: string; username: string; name: string }>;
    calls: Record<string, { _id: string; status: number }>;
    records: Array<{ data: unknown; association: string }>;
}

export function world(overrides: Partial<FakeWorld> = {}): FakeWorld {
    return {
        settings: goodSettings(),
        siteUrl: 'https://chat.example.org',
        users: { alice: { id: 'uid-alice', username: 'alice', name: 'Alice' } },
        calls: { rccall1: { _id: 'rccall1', status: 1 } },
        records: [],
        ...overrides,
    };
}

function key(association: RocketChatAssociationRecord): string {
    return `${association.getModel()}:${association.getID()}`;
}

export function mockRead(w: FakeWorld): IRead {
    const read = {
        getEnvironmentReader: () => ({
            getSettings: () => ({ getValueById: async (id: string) => w.settings[id] }),
            getServerSettings: () => ({ getValueById: async (id: string) => (id === 'Site_Url' ? w.siteUrl : undefined) }),
        }),
        getPersistenceReader: () => ({
            readByAssociation: async (association: RocketChatAssociationRecord) =>
                w.records.filter((r) => r.association === key(association)).map((r) => r.data),
        }),
        getUserReader: () => ({ getByUsername: async (username: string) => w.users[username] }),
        getVideoConferenceReader: () => ({ getById: async (id: string) => w.calls[id] }),
    };
    return read as unknown as IRead;
}

export function mockPersis(w: FakeWorld): IPersistence {
    const persis = {
        createWithAssociation: async (data: unknown, association: RocketChatAssociationRecord) => {
            w.records.push({ data, association: key(association) });
            return String(w.records.length);
        },
    };
    return persis as unknown as IPersistence;
}

export interface ExtenderOp {
    call: string;
    op: string;
    args: unknown[];
}

export function mockModify(ops: ExtenderOp[]): IModify {
    const modify = {
        getExtender: () => ({
            extendVideoConference: async (id: string) => {
                const pending: ExtenderOp[] = [];
                const extender: any = { kind: 'video-conference', pending };
                for (const op of ['setStatus', 'setEndedAt', 'setEndedBy', 'addUser', 'setProviderData', 'setDiscussionRid']) {
                    extender[op] = (...args: unknown[]) => {
                        pending.push({ call: id, op, args });
                        return extender;
                    };
                }
                return extender;
            },
            finish: async (extender: any) => {
                ops.push(...extender.pending);
                ops.push({ call: extender.pending[0]?.call ?? '', op: 'finish', args: [] });
            },
        }),
    };
    return modify as unknown as IModify;
}

export interface SentRequest {
    method: string;
    url: string;
    options: IHttpRequest;
}

export type Responder = (request: SentRequest) => Partial<IHttpResponse> | Promise<Partial<IHttpResponse>>;

export function mockHttp(responder: Responder, sent: SentRequest[] = []): IHttp & { sent: SentRequest[] } {
    const call = (method: string) => async (url: string, options: IHttpRequest = {}): Promise<IHttpResponse> => {
        const request = { method, url, options };
        sent.push(request);
        const answer = await responder(request);
        return { url, method: method as RequestMethod, statusCode: 200, ...answer };
    };
    return { get: call('get'), post: call('post'), put: call('put'), del: call('delete'), patch: call('patch'), sent };
}

/** An IHttp that really talks HTTP (node's fetch), for the end-to-end script. */
export function realHttp(): IHttp {
    const call = (method: string) => async (url: string, options: IHttpRequest = {}): Promise<IHttpResponse> => {
        const body = options.content !== undefined ? options.content : options.data !== undefined ? JSON.stringify(options.data) : undefined;
        const response = await fetch(url, { method: method.toUpperCase(), headers: options.headers, body });
        const content = await response.text();
        let data: unknown;
        try {
            data = JSON.parse(content);
        } catch {
            data = undefined;
        }
        const headers: { [key: string]: string } = {};
        response.headers.forEach((value, name) => {
            headers[name] = value;
        });
        return { url, method: method as RequestMethod, statusCode: response.status, headers, content, data };
    };
    return { get: call('get'), post: call('post'), put: call('put'), del: call('delete'), patch: call('patch') };
}

/** Decode a JWT's payload and check its HS256 signature with node's crypto. */
export function decodeJwt(token: string, secret: string): Record<string, any> {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const crypto = require('node:crypto');
    const [header, payload, signature] = token.split('.');
    const expected = crypto.createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
    if (expected !== signature) {
        throw new Error('JWT signature does not verify');
    }
    return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
}
