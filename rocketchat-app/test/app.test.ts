import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { IAppAccessors, IConfigurationExtend, IEnvironmentRead, ILogger } from '@rocket.chat/apps-engine/definition/accessors';
import { ApiSecurity, ApiVisibility, IApi } from '@rocket.chat/apps-engine/definition/api';
import { IAppInfo } from '@rocket.chat/apps-engine/definition/metadata';
import { ISetting } from '@rocket.chat/apps-engine/definition/settings';
import { IVideoConfProvider } from '@rocket.chat/apps-engine/definition/videoConfProviders';
import { MediafedApp } from '../src/MediafedApp';
import { WebhookEndpoint } from '../src/endpoint';
import { mockRead, world } from './mocks';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const manifest = require('../../app.json');

const logger = { debug() {}, info() {}, warn() {}, error() {}, log() {} } as unknown as ILogger;

function makeApp(): MediafedApp {
    const accessors = {
        providedApiEndpoints: [
            { path: 'events', computedPath: `/api/apps/public/${manifest.id}/events`, methods: ['post'] },
        ],
    } as unknown as IAppAccessors;
    return new MediafedApp(manifest as IAppInfo, logger, accessors);
}

test('app.json is a valid manifest for this App', () => {
    assert.match(manifest.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.match(manifest.nameSlug, /^([a-z]|-)+$/);
    assert.equal(manifest.nameSlug, 'mediafed');
    assert.equal(manifest.classFile, 'src/MediafedApp.ts');
    for (const field of ['name', 'version', 'description', 'requiredApiVersion', 'iconFile']) {
        assert.ok(manifest[field], field);
    }
    assert.ok(manifest.author.name && manifest.author.support);
});

test('extendConfiguration registers settings, the public endpoint and the provider', async () => {
    const provided: { settings: ISetting[]; apis: IApi[]; providers: IVideoConfProvider[] } = { settings: [], apis: [], providers: [] };
    const configuration = {
        settings: { provideSetting: async (s: ISetting) => void provided.settings.push(s) },
        api: { provideApi: async (a: IApi) => void provided.apis.push(a) },
        videoConfProviders: { provideVideoConfProvider: async (p: IVideoConfProvider) => void provided.providers.push(p) },
    } as unknown as IConfigurationExtend;
    const app = makeApp();
    await (app as any).extendConfiguration(configuration, {} as IEnvironmentRead);
    assert.equal(provided.settings.length, 6);
    assert.equal(provided.apis.length, 1);
    assert.equal(provided.apis[0].visibility, ApiVisibility.PUBLIC);
    assert.equal(provided.apis[0].security, ApiSecurity.UNSECURE);
    assert.ok(provided.apis[0].endpoints[0] instanceof WebhookEndpoint);
    assert.equal(provided.apis[0].endpoints[0].path, 'events');
    assert.deepEqual(
        provided.providers.map((p) => p.name),
        ['mediafed'],
    );
});

test('webhookUrl is Site_Url plus the endpoint path', async () => {
    const app = makeApp();
    const url = await app.webhookUrl(mockRead(world({ siteUrl: 'https://chat.example.org/' })));
    assert.equal(url, `https://chat.example.org/api/apps/public/${manifest.id}/events`);
    assert.equal(await app.webhookUrl(mockRead(world({ siteUrl: '' }))), '');
});
