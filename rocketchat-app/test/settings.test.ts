import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { SettingId, SettingsError, parseRoomLinks, readSettings, settings } from '../src/settings';
import { goodSettings, mockRead, world } from './mocks';

test('every setting is declared with a label', () => {
    const ids = settings.map((s) => s.id).sort();
    assert.deepEqual(ids, Object.values(SettingId).sort());
    for (const setting of settings) {
        assert.ok(setting.i18nLabel.startsWith(setting.id));
    }
});

test('readSettings trims the URL and reads defaults', async () => {
    const read = mockRead(world({ settings: goodSettings({ [SettingId.RoomLinks]: 'GENERAL = !abc:matrix.org\n# note\n' }) }));
    const result = await readSettings(read);
    assert.equal(result.url, 'http://mediafed.test:7880');
    assert.equal(result.defaultMic, true);
    assert.equal(result.defaultCam, false);
    assert.deepEqual([...result.roomLinks], [['GENERAL', '!abc:matrix.org']]);
});

test('readSettings refuses bad settings with a message naming the setting', async () => {
    const cases: Array<[Partial<Record<SettingId, unknown>>, RegExp]> = [
        [{ [SettingId.Url]: '' }, /"mediafed URL"/],
        [{ [SettingId.Url]: 'ftp://x' }, /"mediafed URL"/],
        [{ [SettingId.ApiKey]: '' }, /"API key" and "API secret"/],
        [{ [SettingId.ApiSecret]: '  ' }, /"API key" and "API secret"/],
        [{ [SettingId.RoomLinks]: 'GENERAL=#alias:matrix.org' }, /line 1 of "Matrix rooms linked/],
    ];
    for (const [override, message] of cases) {
        await assert.rejects(readSettings(mockRead(world({ settings: goodSettings(override) }))), (error: Error) => {
            assert.ok(error instanceof SettingsError);
            assert.match(error.message, message);
            return true;
        });
    }
});

test('parseRoomLinks', () => {
    assert.deepEqual([...parseRoomLinks('')], []);
    assert.deepEqual([...parseRoomLinks('a=!x:y\r\nb=!z:w')], [['a', '!x:y'], ['b', '!z:w']]);
    assert.throws(() => parseRoomLinks('a=!x:y\nbroken'), /line 2/);
    // room version 12 ids have no server part
    const v12 = '!lnTzxuXHixyorMcjgzUbtL2FDo9WJl6cVwcGfO9tlY0';
    assert.deepEqual([...parseRoomLinks(`GENERAL=${v12}`)], [['GENERAL', v12]]);
    assert.throws(() => parseRoomLinks('GENERAL=!lnTzxuXHixyorMcjgz'), /line 1/);
});
