/**
 * mediafed's call API as the App uses it (see mediafed/rocketchat/openapi.yaml):
 * `GET /api/v1/calls`, `POST /api/v1/calls`, `POST /api/v1/calls/{id}/join`,
 * each authenticated with a fresh short-lived HS256 service token.
 */
import { IHttp, IHttpResponse } from '@rocket.chat/apps-engine/definition/accessors';
import { serviceToken } from './crypto';
import { MediafedSettings } from './settings';

export interface CreateCallRequest {
    external_room: string;
    external_call_id?: string;
    title?: string;
    webhook_url?: string;
}

export interface CallInfo {
    call_id: string;
    room: string;
    title: string;
    join_url: string;
    status: string;
    created: boolean;
}

export interface JoinRequest {
    identity: string;
    name?: string;
    mic?: boolean;
    cam?: boolean;
    ttl_s?: number;
}

export interface JoinInfo {
    token: string;
    join_url: string;
    room: string;
}

export class MediafedApiError extends Error {
    constructor(message: string, public readonly status: number) {
        super(message);
    }
}

export class MediafedClient {
    constructor(
        private readonly http: IHttp,
        private readonly settings: MediafedSettings,
        private readonly now: () => number = () => Date.now() / 1000,
    ) {}

    private headers(): { [key: string]: string } {
        const token = serviceToken(this.settings.apiKey, this.settings.apiSecret, this.now());
        return { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
    }

    private static body(response: IHttpResponse): any {
        if (response.data !== undefined && response.data !== null) {
            return response.data;
        }
        if (response.content) {
            try {
                return JSON.parse(response.content);
            } catch {
                return undefined;
            }
        }
        return undefined;
    }

    private check(response: IHttpResponse | undefined, what: string): any {
        if (!response) {
            throw new MediafedApiError(`mediafed did not answer ${what}; check "mediafed URL"`, 0);
        }
        const body = MediafedClient.body(response);
        if (response.statusCode < 200 || response.statusCode >= 300) {
            const reason = body && typeof body.error === 'string' ? body.error : `HTTP ${response.statusCode}`;
            throw new MediafedApiError(`mediafed refused ${what}: ${reason}`, response.statusCode);
        }
        if (!body || typeof body !== 'object') {
            throw new MediafedApiError(`mediafed answered ${what} without JSON`, response.statusCode);
        }
        return body;
    }

    /** The HTTP status of `GET /api/v1/calls?status=active` (200 when the settings work). */
    async probe(): Promise<number> {
        const response = await this.http.get(`${this.settings.url}/api/v1/calls?status=active`, {
            headers: this.headers(),
            timeout: 10000,
        });
        return response ? response.statusCode : 0;
    }

    async createCall(request: CreateCallRequest): Promise<CallInfo> {
        const response = await this.http.post(`${this.settings.url}/api/v1/calls`, {
            headers: this.headers(),
            content: JSON.stringify(request),
            timeout: 10000,
        });
        const body = this.check(response, 'the call');
        if (typeof body.call_id !== 'string' || typeof body.join_url !== 'string') {
            throw new MediafedApiError('mediafed answered the call without call_id/join_url', response.statusCode);
        }
        return body as CallInfo;
    }

    async join(callId: string, request: JoinRequest): Promise<JoinInfo> {
        const response = await this.http.post(
            `${this.settings.url}/api/v1/calls/${encodeURIComponent(callId)}/join`,
            { headers: this.headers(), content: JSON.stringify(request), timeout: 10000 },
        );
        const body = this.check(response, 'the join link');
        if (typeof body.join_url !== 'string' || typeof body.token !== 'string') {
            throw new MediafedApiError('mediafed answered the join without token/join_url', response.statusCode);
        }
        return body as JoinInfo;
    }
}
