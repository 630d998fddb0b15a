/**
 * End-to-end driver: the App's provider and webhook endpoint against a real
 * mediafed on loopback. Launched by tests/rocketchat/test_app_e2e.py with
 * MEDIAFED_URL, MEDIAFED_API_KEY and MEDIAFED_API_SECRET in the environment.
 *
 * Prints one JSON line when the call exists and join links are made, then
 * serves the App endpoint (a real HTTP server feeding the real handler) until
 * mediafed's signed "call_ended" arrives, replays that request once, and
 * prints a second JSON line with everything the endpoint saw.
 */
import * as http from 'node:http';
import { AddressInfo } from 'node:net';
import { IApiEndpointInfo, IApiRequest, IApiResponse } from '@rocket.chat/apps-engine/definition/api';
import { IApp } from '@rocket.chat/apps-engine/definition/IApp';
import { VideoConfData } from '@rocket.chat/apps-engine/definition/videoConfProviders';
import { WebhookEndpoint } from '../../src/endpoint';
import { SettingId } from '../../src/settings';
import { MediafedProvider } from '../../src/videoConfProvider';
import { ExtenderOp, goodSettings, mockModify, mockPersis, mockRead, realHttp, world } from '../mocks';

interface Delivery {
    status: number;
    event?: string;
    identity?: string;
    error?: string;
}

async function main(): Promise<void> {
    const url = process.env.MEDIAFED_URL ?? '';
    const apiKey = process.env.MEDIAFED_API_KEY ?? '';
    const apiSecret = process.env.MEDIAFED_API_SECRET ?? '';
    const w = world({
        settings: goodSettings({ [SettingId.Url]: url, [SettingId.ApiKey]: apiKey, [SettingId.ApiSecret]: apiSecret }),
        calls: { 'rccall-e2e': { _id: 'rccall-e2e', status: 1 } },
    });
    const ops: ExtenderOp[] = [];
    const deliveries: Delivery[] = [];
    const endpoint = new WebhookEndpoint({} as IApp);
    let ended: () => void = () => undefined;
    const callEnded = new Promise<void>((resolve) => {
        ended = resolve;
    });
    let lastEnded: { headers: Record<string, string>; body: string } | undefined;

    const server = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', async () => {
            const body = Buffer.concat(chunks).toString('utf8');
            const headers: Record<string, string> = {};
            for (const [name, value] of Object.entries(req.headers)) {
                headers[name] = Array.isArray(value) ? value.join(',') : String(value ?? '');
            }
            let content: unknown;
            try {
                content = JSON.parse(body); // Rocket.Chat hands Apps parsed JSON
            } catch {
                content = body;
            }
            const request: IApiRequest = { method: 'post' as any, headers, query: {}, params: {}, content };
            let response: IApiResponse;
            try {
                response = await endpoint.post(request, {} as IApiEndpointInfo, mockRead(w), mockModify(ops), realHttp(), mockPersis(w));
            } catch (error) {
                response = { status: 500, content: { error: String(error) } };
            }
            const event = content && typeof content === 'object' ? (content as any) : {};
            deliveries.push({ status: response.status, event: event.event, identity: event.identity, error: response.content?.error });
            res.writeHead(response.status, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify(response.content ?? {}));
            if (event.event === 'call_ended' && response.status === 200) {
                lastEnded = { headers, body };
                ended();
            }
        });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const webhookUrl = `http://127.0.0.1:${port}/api/apps/public/app-id/events`;

    const provider = new MediafedProvider(async () => webhookUrl);
    const httpClient = realHttp();
    const read = mockRead(w);
    const configured = await provider.isFullyConfigured(read, {} as any, httpClient, {} as any);
    const wrong = world({ settings: goodSettings({ [SettingId.Url]: url, [SettingId.ApiKey]: apiKey, [SettingId.ApiSecret]: 'not-the-secret' }) });
    const misconfigured = await provider.isFullyConfigured(mockRead(wrong), {} as any, httpClient, {} as any);

    const call: VideoConfData = {
        _id: 'rccall-e2e',
        type: 'videoconference',
        rid: 'ROOME2E',
        createdBy: { _id: 'uid-alice', username: 'alice', name: 'Alice' },
        title: 'End to end',
    };
    const generated = await provider.generateUrl(call, read, {} as any, httpClient, {} as any);
    const extended = { ...call, url: generated };
    const alice = await provider.customizeUrl(extended, { _id: 'uid-alice', username: 'alice', name: 'Alice' }, { mic: true, cam: false }, read, {} as any, httpClient, {} as any);
    const guest = await provider.customizeUrl(extended, undefined, undefined, read, {} as any, httpClient, {} as any);
    console.log(JSON.stringify({ ready: true, configured, misconfigured, generated, alice, guest, webhookUrl }));

    const timeout = setTimeout(() => {
        console.log(JSON.stringify({ error: 'no call_ended webhook within 60 s', deliveries }));
        process.exit(1);
    }, 60000);
    await callEnded;
    clearTimeout(timeout);
    // Replay mediafed's own signed request: the endpoint must refuse it.
    const replay = await fetch(webhookUrl, {
        method: 'POST',
        headers: {
            'content-type': 'application/json',
            'x-mediafed-signature': lastEnded!.headers['x-mediafed-signature'],
            'x-mediafed-key': lastEnded!.headers['x-mediafed-key'],
        },
        body: lastEnded!.body,
    });
    console.log(JSON.stringify({ done: true, deliveries, replayStatus: replay.status, ops: ops.map((o) => [o.call, o.op, o.args[0]]) }));
    server.close();
}

main().catch((error) => {
    console.log(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }));
    process.exit(1);
});
