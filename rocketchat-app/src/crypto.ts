/**
 * SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104), HS256 JWTs (RFC 7519/7515) and
 * the mediafed webhook signature, in plain TypeScript.
 *
 * Written here instead of importing node's `crypto` so that the App runs the
 * same in every Apps-Engine runtime (the sandbox limits which node modules an
 * App may require). Inputs are small (tokens, webhook bodies), so speed does
 * not matter; correctness is checked against node's crypto in the unit tests.
 */

function primes(count: number): number[] {
    const found: number[] = [];
    for (let n = 2; found.length < count; n++) {
        if (found.every((p) => n % p !== 0)) {
            found.push(n);
        }
    }
    return found;
}

function fractionBits(value: number): number {
    return Math.floor((value - Math.floor(value)) * 0x100000000) >>> 0;
}

const FIRST_PRIMES = primes(64);
// "the first thirty-two bits of the fractional parts of the cube roots of the
// first sixty-four prime numbers" (FIPS 180-4, 4.2.2)
const K = FIRST_PRIMES.map((p) => fractionBits(Math.cbrt(p)));
// "the first thirty-two bits of the fractional parts of the square roots of the
// first eight prime numbers" (FIPS 180-4, 5.3.3)
const H0 = FIRST_PRIMES.slice(0, 8).map((p) => fractionBits(Math.sqrt(p)));

function rotr(x: number, n: number): number {
    return (x >>> n) | (x << (32 - n));
}

export function sha256(data: Uint8Array): Uint8Array {
    const length = data.length;
    const blocks = Math.ceil((length + 9) / 64);
    const padded = new Uint8Array(blocks * 64);
    padded.set(data);
    padded[length] = 0x80;
    const bitsHigh = Math.floor(length / 0x20000000);
    const bitsLow = (length * 8) >>> 0;
    const end = padded.length;
    for (let i = 0; i < 4; i++) {
        padded[end - 8 + i] = (bitsHigh >>> (24 - 8 * i)) & 0xff;
        padded[end - 4 + i] = (bitsLow >>> (24 - 8 * i)) & 0xff;
    }
    const h = H0.slice();
    const w = new Array<number>(64);
    for (let offset = 0; offset < end; offset += 64) {
        for (let i = 0; i < 16; i++) {
            const j = offset + i * 4;
            w[i] = ((padded[j] << 24) | (padded[j + 1] << 16) | (padded[j + 2] << 8) | padded[j + 3]) >>> 0;
        }
        for (let i = 16; i < 64; i++) {
            const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
            const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
        }
        let [a, b, c, d, e, f, g, hh] = h;
        for (let i = 0; i < 64; i++) {
            const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            const ch = (e & f) ^ (~e & g);
            const t1 = (hh + S1 + ch + K[i] + w[i]) >>> 0;
            const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            const maj = (a & b) ^ (a & c) ^ (b & c);
            const t2 = (S0 + maj) >>> 0;
            hh = g;
            g = f;
            f = e;
            e = (d + t1) >>> 0;
            d = c;
            c = b;
            b = a;
            a = (t1 + t2) >>> 0;
        }
        h[0] = (h[0] + a) >>> 0;
        h[1] = (h[1] + b) >>> 0;
        h[2] = (h[2] + c) >>> 0;
        h[3] = (h[3] + d) >>> 0;
        h[4] = (h[4] + e) >>> 0;
        h[5] = (h[5] + f) >>> 0;
        h[6] = (h[6] + g) >>> 0;
        h[7] = (h[7] + hh) >>> 0;
    }
    const out = new Uint8Array(32);
    h.forEach((word, i) => {
        out[i * 4] = word >>> 24;
        out[i * 4 + 1] = (word >>> 16) & 0xff;
        out[i * 4 + 2] = (word >>> 8) & 0xff;
        out[i * 4 + 3] = word & 0xff;
    });
    return out;
}

export function utf8(text: string): Uint8Array {
    const bytes: number[] = [];
    for (let i = 0; i < text.length; i++) {
        let code = text.charCodeAt(i);
        if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
            const low = text.charCodeAt(i + 1);
            if (low >= 0xdc00 && low <= 0xdfff) {
                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                i++;
            }
        }
        if (code >= 0xd800 && code <= 0xdfff) {
            code = 0xfffd; // a lone surrogate has no UTF-8 form
        }
        if (code < 0x80) {
            bytes.push(code);
        } else if (code < 0x800) {
            bytes.push(0xc0 | (code >> 6), 0x80 | (code & 0x3f));
        } else if (code < 0x10000) {
            bytes.push(0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f));
        } else {
            bytes.push(
                0xf0 | (code >> 18),
                0x80 | ((code >> 12) & 0x3f),
                0x80 | ((code >> 6) & 0x3f),
                0x80 | (code & 0x3f),
            );
        }
    }
    return Uint8Array.from(bytes);
}

export function hmacSha256(key: string | Uint8Array, message: string | Uint8Array): Uint8Array {
    let keyBytes = typeof key === 'string' ? utf8(key) : key;
    if (keyBytes.length > 64) {
        keyBytes = sha256(keyBytes);
    }
    const block = new Uint8Array(64);
    block.set(keyBytes);
    const messageBytes = typeof message === 'string' ? utf8(message) : message;
    const inner = new Uint8Array(64 + messageBytes.length);
    const outer = new Uint8Array(64 + 32);
    for (let i = 0; i < 64; i++) {
        inner[i] = block[i] ^ 0x36;
        outer[i] = block[i] ^ 0x5c;
    }
    inner.set(messageBytes, 64);
    outer.set(sha256(inner), 64);
    return sha256(outer);
}

export function toHex(bytes: Uint8Array): string {
    let out = '';
    bytes.forEach((b) => {
        out += (b < 16 ? '0' : '') + b.toString(16);
    });
    return out;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** base64url without padding (RFC 4648 section 5), as JWTs use it. */
export function base64url(bytes: Uint8Array): string {
    let out = '';
    for (let i = 0; i < bytes.length; i += 3) {
        const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
        out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
        if (i + 1 < bytes.length) {
            out += B64[(n >> 6) & 63];
        }
        if (i + 2 < bytes.length) {
            out += B64[n & 63];
        }
    }
    return out;
}

/** Compare two strings without stopping at the first difference. */
export function constantTimeEqual(a: string, b: string): boolean {
    if (a.length !== b.length) {
        return false; // lengths are public: a hex SHA-256 is always 64 characters
    }
    let diff = 0;
    for (let i = 0; i < a.length; i++) {
        diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
    }
    return diff === 0;
}

/** An HS256 JWT with the given claims. */
export function signJwt(claims: Record<string, unknown>, secret: string): string {
    const header = base64url(utf8(JSON.stringify({ alg: 'HS256', typ: 'JWT' })));
    const payload = base64url(utf8(JSON.stringify(claims)));
    const signature = base64url(hmacSha256(secret, `${header}.${payload}`));
    return `${header}.${payload}.${signature}`;
}

/**
 * The LiveKit-style service token mediafed's call API takes: `iss` = API key,
 * grants roomCreate, roomList, roomAdmin; short-lived.
 */
export function serviceToken(apiKey: string, apiSecret: string, nowSeconds: number, ttlSeconds = 300): string {
    const now = Math.floor(nowSeconds);
    return signJwt(
        {
            iss: apiKey,
            sub: 'rocketchat-app',
            nbf: now,
            exp: now + ttlSeconds,
            video: { roomCreate: true, roomList: true, roomAdmin: true },
        },
        apiSecret,
    );
}

export class SignatureError extends Error {}

export const SIGNATURE_HEADER = 'x-mediafed-signature';
export const KEY_HEADER = 'x-mediafed-key';
export const TOLERANCE_SECONDS = 300;

/** `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` */
export function signWebhook(secret: string, body: string, timestamp: number): string {
    return `t=${timestamp},v1=${toHex(hmacSha256(secret, `${timestamp}.${body}`))}`;
}

/** Check a webhook signature header; returns its timestamp or throws SignatureError. */
export function verifyWebhook(header: string | undefined, body: string, secret: string, nowSeconds: number): number {
    if (!header) {
        throw new SignatureError('missing X-Mediafed-Signature header');
    }
    let timestamp: number | undefined;
    const signatures: string[] = [];
    for (const part of header.split(',')) {
        const [name, ...rest] = part.trim().split('=');
        const value = rest.join('=');
        if (name === 't' && /^\d+$/.test(value) && timestamp === undefined) {
            timestamp = parseInt(value, 10);
        } else if (name === 'v1') {
            signatures.push(value);
        }
    }
    if (timestamp === undefined || signatures.length === 0) {
        throw new SignatureError("X-Mediafed-Signature must look like 't=<unix>,v1=<hex>'");
    }
    if (Math.abs(nowSeconds - timestamp) > TOLERANCE_SECONDS) {
        throw new SignatureError('webhook timestamp is more than 5 minutes away; check clocks');
    }
    const expected = toHex(hmacSha256(secret, `${timestamp}.${body}`));
    let matched = false;
    for (const given of signatures) {
        matched = constantTimeEqual(expected, given) || matched;
    }
    if (!matched) {
        throw new SignatureError('webhook signature does not match the API secret');
    }
    return timestamp;
}
