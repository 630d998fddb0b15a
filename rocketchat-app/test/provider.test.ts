import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { IModify, IPersistence } from '@rocket.chat/apps-engine/definition/accessors';
import { VideoConfData, VideoConfDataExtended } from '@rocket.chat/apps-engine/definition/videoConfProviders';
import { MediafedApiError } from '../src/mediafedClient';
import { SettingId } from '../src/settings';
import { MediafedProvider } from '../src/videoConfProvider';
import { KEY, SECRET, SentRequest, decodeJwt, goodSettings, mockHttp, mockPersis, mockRead, world } from './mocks';

const NOW = 1_700_000_000;
const modify = {} as IModify;
const persis = {} as IPersistence;
const WEBHOOK = 'https://chat.example.org/api/apps/public/app-id/events';

function provider(): MediafedProvider {
    return new MediafedProvider(async () => WEBHOOK, () => NOW);
}

const call: VideoConfData = {
    _id: 'rccall1',
    type: 'videoconference',
    rid: 'ROOM1',
    createdBy: { _id: 'uid-alice', username: 'alice', name: 'Alice' },
    title: 'Standup',
};

const created = {
    call_id: 'CL_1',
    room: 'rc-ROOM1',
    title: 'Standup',
    join_url: 'http://mediafed.test:7880/api/v1/calls/CL_1/invite?code=abc',
    status: 'active',
    created: true,
};

function mediafed(sent: SentRequest[]) {
    return mockHttp((request) => {
        if (request.url.endsWith('/api/v1/calls') && request.method === 'post') {
            return { statusCode: 201, data: created };
        }
        if (request.url.endsWith('/api/v1/calls/CL_1/join')) {
            const body = JSON.parse(request.options.content as string);
            return {
                statusCode: 200,
                data: { token: 'jwt', room: 'rc-ROOM1', join_url: `http://mediafed.test:7880/?token=jwt&mic=${+body.mic}&cam=${+body.cam}` },
            };
        }
        return { statusCode: 404, data: { error: 'not here' } };
    }, sent);
}

function authClaims(request: SentRequest) {
    const header = request.options.headers?.Authorization ?? '';
    assert.match(header, /^Bearer /);
    return decodeJwt(header.slice('Bearer '.length), SECRET);
}

test('name and capabilities', () => {
    const p = provider();
    assert.equal(p.name, 'mediafed');
    assert.deepEqual(p.capabilities, { mic: true, cam: true, title: true });
});

test('isFullyConfigured asks mediafed with a signed token and needs a 200', async () => {
    const sent: SentRequest[] = [];
    const ok = mockHttp(() => ({ statusCode: 200, data: { calls: [] } }), sent);
    assert.equal(await provider().isFullyConfigured(mockRead(world()), modify, ok, persis), true);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].method, 'get');
    assert.equal(sent[0].url, 'http://mediafed.test:7880/api/v1/calls?status=active');
    const claims = authClaims(sent[0]);
    assert.equal(claims.iss, KEY);
    assert.equal(claims.video.roomList, true);
    assert.ok(claims.exp > NOW && claims.exp - NOW <= 300);

    const refused = mockHttp(() => ({ statusCode: 401, data: { error: 'signature does not match' } }));
    assert.equal(await provider().isFullyConfigured(mockRead(world()), modify, refused, persis), false);
    const down = mockHttp(() => {
        throw new Error('ECONNREFUSED');
    });
    assert.equal(await provider().isFullyConfigured(mockRead(world()), modify, down, persis), false);
});

test('isFullyConfigured is false with bad settings, without any request', async () => {
    const sent: SentRequest[] = [];
    const http = mockHttp(() => ({ statusCode: 200 }), sent);
    const read = mockRead(world({ settings: goodSettings({ [SettingId.ApiSecret]: '' }) }));
    assert.equal(await provider().isFullyConfigured(read, modify, http, persis), false);
    assert.equal(sent.length, 0);
});

test('generateUrl creates the call of the room and returns its link', async () => {
    const sent: SentRequest[] = [];
    const url = await provider().generateUrl(call, mockRead(world()), modify, mediafed(sent), persis);
    assert.equal(url, created.join_url);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].url, 'http://mediafed.test:7880/api/v1/calls');
    assert.deepEqual(JSON.parse(sent[0].options.content as string), {
        external_room: 'rocketchat:ROOM1',
        external_call_id: 'rccall1',
        title: 'Standup',
        webhook_url: WEBHOOK,
    });
    assert.equal(authClaims(sent[0]).video.roomCreate, true);
});

test('generateUrl uses the linked Matrix room when one is set', async () => {
    const sent: SentRequest[] = [];
    const read = mockRead(world({ settings: goodSettings({ [SettingId.RoomLinks]: 'ROOM1=!team:matrix.org' }) }));
    await provider().generateUrl(call, read, modify, mediafed(sent), persis);
    assert.equal(JSON.parse(sent[0].options.content as string).external_room, '!team:matrix.org');
});

test('generateUrl reports mediafed refusals and bad settings', async () => {
    const refused = mockHttp(() => ({ statusCode: 401, data: { error: 'access token signature does not match' } }));
    await assert.rejects(provider().generateUrl(call, mockRead(world()), modify, refused, persis), (error: Error) => {
        assert.ok(error instanceof MediafedApiError);
        assert.equal(error.status, 401);
        assert.match(error.message, /mediafed refused the call: access token signature does not match/);
        return true;
    });
    const read = mockRead(world({ settings: goodSettings({ [SettingId.Url]: '' }) }));
    await assert.rejects(provider().generateUrl(call, read, modify, mediafed([]), persis), /"mediafed URL"/);
});

test('customizeUrl gives each user a personal link with mic/cam', async () => {
    const extended: VideoConfDataExtended = { ...call, url: created.join_url };
    const sent: SentRequest[] = [];
    const user = { _id: 'uid-bob', username: 'bob', name: 'Bob B' };
    const url = await provider().customizeUrl(extended, user, { mic: false, cam: true }, mockRead(world()), modify, mediafed(sent), persis);
    assert.equal(url, 'http://mediafed.test:7880/?token=jwt&mic=0&cam=1');
    assert.deepEqual(
        sent.map((r) => r.url),
        ['http://mediafed.test:7880/api/v1/calls', 'http://mediafed.test:7880/api/v1/calls/CL_1/join'],
    );
    assert.deepEqual(JSON.parse(sent[1].options.content as string), { identity: 'bob', name: 'Bob B', mic: false, cam: true });
    assert.equal(authClaims(sent[1]).video.roomAdmin, true);
});

test('customizeUrl falls back to the default mic/cam and to a guest', async () => {
    const extended: VideoConfDataExtended = { ...call, url: created.join_url };
    const sent: SentRequest[] = [];
    const read = mockRead(world({ settings: goodSettings({ [SettingId.DefaultMic]: false, [SettingId.DefaultCam]: true }) }));
    await provider().customizeUrl(extended, undefined, undefined, read, modify, mediafed(sent), persis);
    const body = JSON.parse(sent[1].options.content as string);
    assert.match(body.identity, /^guest-[a-z0-9]+$/);
    assert.equal(body.name, 'Guest');
    assert.equal(body.mic, false);
    assert.equal(body.cam, true);
});

test('customizeUrl reports an ended call', async () => {
    const extended: VideoConfDataExtended = { ...call, url: created.join_url };
    const http = mockHttp((request) =>
        request.url.endsWith('/join')
            ? { statusCode: 410, data: { error: 'call CL_1 has ended; create a new one' } }
            : { statusCode: 200, data: created },
    );
    await assert.rejects(
        provider().customizeUrl(extended, undefined, undefined, mockRead(world()), modify, http, mockPersis(world())),
        /mediafed refused the join link: call CL_1 has ended/,
    );
});
