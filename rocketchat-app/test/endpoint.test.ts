import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { IHttp } from '@rocket.chat/apps-engine/definition/accessors';
import { IApiEndpointInfo, IApiRequest } from '@rocket.chat/apps-engine/definition/api';
import { IApp } from '@rocket.chat/apps-engine/definition/IApp';
import { signWebhook } from '../src/crypto';
import { WebhookEndpoint } from '../src/endpoint';
import { SettingId } from '../src/settings';
import { ExtenderOp, FakeWorld, KEY, SECRET, goodSettings, mockModify, mockPersis, mockRead, world } from './mocks';

const NOW = 1_700_000_000;
const info = {} as IApiEndpointInfo;
const http = {} as IHttp;

function event(kind: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
        call_id: 'CL_1',
        event: kind,
        external_call_id: 'rccall1',
        id: `id-${kind}-${Math.random()}`,
        room: 'rc-ROOM1',
        timestamp: NOW - 2,
        ...extra,
    };
}

function signed(content: Record<string, unknown>, secret = SECRET, at = NOW, key = KEY): IApiRequest {
    return {
        method: 'post' as any,
        headers: {
            'content-type': 'application/json',
            'x-mediafed-signature': signWebhook(secret, JSON.stringify(content), at),
            'x-mediafed-key': key,
        },
        query: {},
        params: {},
        content,
    };
}

async function deliver(w: FakeWorld, request: IApiRequest, ops: ExtenderOp[] = []) {
    const endpoint = new WebhookEndpoint({} as IApp, () => NOW);
    return endpoint.post(request, info, mockRead(w), mockModify(ops), http, mockPersis(w));
}

test('participant_joined adds the Rocket.Chat user to the call', async () => {
    const w = world();
    const ops: ExtenderOp[] = [];
    const response = await deliver(w, signed(event('participant_joined', { identity: 'alice', name: 'Alice' })), ops);
    assert.equal(response.status, 200);
    assert.deepEqual(
        ops.map((o) => [o.call, o.op, o.args[0]]),
        [
            ['rccall1', 'addUser', 'uid-alice'],
            ['rccall1', 'finish', undefined],
        ],
    );
    assert.deepEqual(ops[0].args[1], new Date((NOW - 2) * 1000));
});

test('participant_joined of a calling call also marks it started', async () => {
    const w = world({ calls: { rccall1: { _id: 'rccall1', status: 0 } } });
    const ops: ExtenderOp[] = [];
    await deliver(w, signed(event('participant_joined', { identity: 'alice' })), ops);
    assert.deepEqual(ops.map((o) => o.op), ['addUser', 'setStatus', 'finish']);
    assert.equal(ops[1].args[0], 1);
});

test('call_ended sets status ENDED (3) and the end time', async () => {
    const ops: ExtenderOp[] = [];
    const response = await deliver(world(), signed(event('call_ended')), ops);
    assert.equal(response.status, 200);
    assert.deepEqual(
        ops.map((o) => [o.op, o.args[0]]),
        [
            ['setStatus', 3],
            ['setEndedAt', new Date((NOW - 2) * 1000)],
            ['finish', undefined],
        ],
    );
});

test('a Matrix participant or a leave changes nothing', async () => {
    const ops: ExtenderOp[] = [];
    const w = world();
    const joined = await deliver(w, signed(event('participant_joined', { identity: '@bob:matrix.org' })), ops);
    assert.equal(joined.status, 200);
    assert.equal(joined.content.ignored, 'not a Rocket.Chat user');
    const left = await deliver(w, signed(event('participant_left', { identity: 'alice' })), ops);
    assert.equal(left.status, 200);
    assert.deepEqual(ops, []);
});

test('bad signatures, keys and timestamps are refused with 401', async () => {
    const body = event('call_ended');
    const cases: Array<[IApiRequest, RegExp]> = [
        [signed(body, 'wrong-secret'), /does not match/],
        [signed(body, SECRET, NOW - 301), /5 minutes/],
        [signed(body, SECRET, NOW, 'otherkey'), /X-Mediafed-Key/],
        [{ ...signed(body), headers: { 'x-mediafed-key': KEY } }, /missing X-Mediafed-Signature/],
        [{ ...signed(body), content: { ...body, event: 'participant_joined' } }, /does not match/],
    ];
    for (const [request, message] of cases) {
        const ops: ExtenderOp[] = [];
        const w = world();
        const response = await deliver(w, request, ops);
        assert.equal(response.status, 401);
        assert.match(response.content.error, message);
        assert.deepEqual(ops, []);
        assert.deepEqual(w.records, []);
    }
});

test('a replayed event is refused with 409 and changes nothing twice', async () => {
    const w = world();
    const ops: ExtenderOp[] = [];
    const request = signed(event('call_ended'));
    assert.equal((await deliver(w, request, ops)).status, 200);
    const replay = await deliver(w, request, ops);
    assert.equal(replay.status, 409);
    assert.match(replay.content.error, /already received/);
    assert.equal(ops.filter((o) => o.op === 'setStatus').length, 1);
});

test('headers are matched case-insensitively and a raw string body works', async () => {
    const body = event('call_ended');
    const text = JSON.stringify(body);
    const request: IApiRequest = {
        method: 'post' as any,
        headers: { 'X-Mediafed-Signature': signWebhook(SECRET, text, NOW), 'X-Mediafed-Key': KEY },
        query: {},
        params: {},
        content: text,
    };
    assert.equal((await deliver(world(), request)).status, 200);
});

test('an unconfigured App answers 503, unknown calls 404, junk 400', async () => {
    const unconfigured = world({ settings: goodSettings({ [SettingId.ApiSecret]: '' }) });
    assert.equal((await deliver(unconfigured, signed(event('call_ended')))).status, 503);
    const unknown = await deliver(world(), signed(event('call_ended', { external_call_id: 'nope' })));
    assert.equal(unknown.status, 404);
    const junk = await deliver(world(), signed({ id: 'x', event: 'exploded' }));
    assert.equal(junk.status, 400);
});
