/**
 * The App's settings (Administration > Apps > mediafed > Settings) and their
 * validation. Every error message tells the admin which setting to fix.
 */
import { IRead } from '@rocket.chat/apps-engine/definition/accessors';
import { ISetting, SettingType } from '@rocket.chat/apps-engine/definition/settings';

export enum SettingId {
    Url = 'mediafed_url',
    ApiKey = 'mediafed_api_key',
    ApiSecret = 'mediafed_api_secret',
    DefaultMic = 'mediafed_default_mic',
    DefaultCam = 'mediafed_default_cam',
    RoomLinks = 'mediafed_room_links',
}

export const settings: ISetting[] = [
    {
        id: SettingId.Url,
        type: SettingType.STRING,
        packageValue: '',
        required: true,
        public: false,
        i18nLabel: 'mediafed_url_label',
        i18nDescription: 'mediafed_url_description',
    },
    {
        id: SettingId.ApiKey,
        type: SettingType.STRING,
        packageValue: '',
        required: true,
        public: false,
        i18nLabel: 'mediafed_api_key_label',
        i18nDescription: 'mediafed_api_key_description',
    },
    {
        id: SettingId.ApiSecret,
        type: SettingType.PASSWORD,
        packageValue: '',
        required: true,
        public: false,
        i18nLabel: 'mediafed_api_secret_label',
        i18nDescription: 'mediafed_api_secret_description',
    },
    {
        id: SettingId.DefaultMic,
        type: SettingType.BOOLEAN,
        packageValue: true,
        required: false,
        public: false,
        i18nLabel: 'mediafed_default_mic_label',
    },
    {
        id: SettingId.DefaultCam,
        type: SettingType.BOOLEAN,
        packageValue: false,
        required: false,
        public: false,
        i18nLabel: 'mediafed_default_cam_label',
    },
    {
        id: SettingId.RoomLinks,
        type: SettingType.CODE,
        packageValue: '',
        required: false,
        public: false,
        multiline: true,
        i18nLabel: 'mediafed_room_links_label',
        i18nDescription: 'mediafed_room_links_description',
    },
];

export interface MediafedSettings {
    url: string;
    apiKey: string;
    apiSecret: string;
    defaultMic: boolean;
    defaultCam: boolean;
    /** Rocket.Chat room id -> Matrix room id */
    roomLinks: Map<string, string>;
}

export class SettingsError extends Error {}

// Room versions 1-11: !opaque:server; version 12 (MSC4291): ! and 43 unpadded
// URL-safe base64 characters, no server part.
const MATRIX_ROOM = /^!([A-Za-z0-9_-]{43}|[^:\s]+:\S+)$/;

export function parseRoomLinks(text: string): Map<string, string> {
    const links = new Map<string, string>();
    text.split(/\r?\n/).forEach((line, index) => {
        const trimmed = line.trim();
        if (!trimmed || trimmed.startsWith('#')) {
            return;
        }
        const [rid, matrixRoom] = trimmed.split('=').map((part) => part.trim());
        if (!rid || !matrixRoom || !MATRIX_ROOM.test(matrixRoom)) {
            throw new SettingsError(
                `line ${index + 1} of "Matrix rooms linked to Rocket.Chat rooms" must be ` +
                    '<Rocket.Chat room id>=<Matrix room id>, e.g. GENERAL=!abc:matrix.example.org ' +
                    'or GENERAL=!lnTzxuXHixyorMcjgzUbtL2FDo9WJl6cVwcGfO9tlY0 (room version 12)',
            );
        }
        links.set(rid, matrixRoom);
    });
    return links;
}

function asBoolean(value: unknown, fallback: boolean): boolean {
    return typeof value === 'boolean' ? value : fallback;
}

export async function readSettings(read: IRead): Promise<MediafedSettings> {
    const reader = read.getEnvironmentReader().getSettings();
    const text = async (id: SettingId): Promise<string> => {
        const value = await reader.getValueById(id);
        return typeof value === 'string' ? value.trim() : '';
    };
    const url = (await text(SettingId.Url)).replace(/\/+$/, '');
    if (!/^https?:\/\/[^\s/]+/.test(url)) {
        throw new SettingsError('set "mediafed URL" to the http(s):// address of your mediafed server');
    }
    const apiKey = await text(SettingId.ApiKey);
    const apiSecret = await text(SettingId.ApiSecret);
    if (!apiKey || !apiSecret) {
        throw new SettingsError('set "API key" and "API secret" to a key pair from mediafed\'s [keys] table');
    }
    return {
        url,
        apiKey,
        apiSecret,
        defaultMic: asBoolean(await reader.getValueById(SettingId.DefaultMic), true),
        defaultCam: asBoolean(await reader.getValueById(SettingId.DefaultCam), false),
        roomLinks: parseRoomLinks(await text(SettingId.RoomLinks)),
    };
}
