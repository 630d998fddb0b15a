import * as assert from 'node:assert/strict';
import * as nodeCrypto from 'node:crypto';
import { test } from 'node:test';
import {
    SignatureError,
    base64url,
    constantTimeEqual,
    hmacSha256,
    serviceToken,
    sha256,
    signWebhook,
    toHex,
    utf8,
    verifyWebhook,
} from '../src/crypto';
import { decodeJwt } from './mocks';

function randomBytes(length: number): Uint8Array {
    return new Uint8Array(nodeCrypto.randomBytes(length));
}

test('sha256 matches node crypto for lengths around every block boundary', () => {
    for (let length = 0; length <= 300; length++) {
        const data = randomBytes(length);
        const expected = nodeCrypto.createHash('sha256').update(data).digest('hex');
        assert.equal(toHex(sha256(data)), expected, `length ${length}`);
    }
    const big = randomBytes(100_003);
    assert.equal(toHex(sha256(big)), nodeCrypto.createHash('sha256').update(big).digest('hex'));
});

test('sha256 of "abc" is the FIPS 180-4 example digest', () => {
    assert.equal(toHex(sha256(utf8('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('hmacSha256 matches node crypto for short and long keys', () => {
    for (const keyLength of [0, 1, 32, 63, 64, 65, 200]) {
        const key = randomBytes(keyLength);
        const message = randomBytes(keyLength * 3 + 7);
        const expected = nodeCrypto.createHmac('sha256', key).update(message).digest('hex');
        assert.equal(toHex(hmacSha256(key, message)), expected, `key length ${keyLength}`);
    }
});

test('utf8 and base64url match Buffer', () => {
    for (const text of ['', 'a', 'héllo', '€', '日本語', 'emoji 🎥📞', 'mixed ✓ 𝄞 end']) {
        assert.deepEqual(Buffer.from(utf8(text)), Buffer.from(text, 'utf8'), text);
    }
    for (let length = 0; length < 40; length++) {
        const data = randomBytes(length);
        assert.equal(base64url(data), Buffer.from(data).toString('base64url'));
    }
});

test('serviceToken is an HS256 JWT with the call API grants', () => {
    const token = serviceToken('key1', 'secret1', 1_700_000_000.7);
    const claims = decodeJwt(token, 'secret1');
    assert.deepEqual(claims, {
        iss: 'key1',
        sub: 'rocketchat-app',
        nbf: 1_700_000_000,
        exp: 1_700_000_300,
        video: { roomCreate: true, roomList: true, roomAdmin: true },
    });
    assert.throws(() => decodeJwt(token, 'another secret'), /does not verify/);
});

test('webhook signatures: valid, tampered, stale, malformed', () => {
    const body = '{"event":"call_ended","id":"x"}';
    const header = signWebhook('s3cret', body, 1_700_000_000);
    const expected = nodeCrypto.createHmac('sha256', 's3cret').update(`1700000000.${body}`).digest('hex');
    assert.equal(header, `t=1700000000,v1=${expected}`);
    assert.equal(verifyWebhook(header, body, 's3cret', 1_700_000_299), 1_700_000_000);
    assert.throws(() => verifyWebhook(header, body + ' ', 's3cret', 1_700_000_000), /does not match/);
    assert.throws(() => verifyWebhook(header, body, 'wrong', 1_700_000_000), /does not match/);
    assert.throws(() => verifyWebhook(header, body, 's3cret', 1_700_000_301), /5 minutes/);
    assert.throws(() => verifyWebhook(undefined, body, 's3cret', 1_700_000_000), /missing/);
    assert.throws(() => verifyWebhook('v1=abc', body, 's3cret', 1_700_000_000), SignatureError);
    // A second, valid v1 (secret rotation) is accepted.
    const rotated = `${signWebhook('old', body, 1_700_000_000)},v1=${expected}`;
    assert.equal(verifyWebhook(rotated, body, 's3cret', 1_700_000_000), 1_700_000_000);
});

test('constantTimeEqual', () => {
    assert.equal(constantTimeEqual('abc', 'abc'), true);
    assert.equal(constantTimeEqual('abc', 'abd'), false);
    assert.equal(constantTimeEqual('abc', 'ab'), false);
    assert.equal(constantTimeEqual('', ''), true);
});
