/**
 * mediafed for Rocket.Chat: a video-conference provider whose calls run on a
 * mediafed relay, so Matrix users of a linked room join the same call.
 */
import {
    IAppAccessors,
    IConfigurationExtend,
    IEnvironmentRead,
    ILogger,
    IRead,
} from '@rocket.chat/apps-engine/definition/accessors';
import { ApiSecurity, ApiVisibility } from '@rocket.chat/apps-engine/definition/api';
import { App } from '@rocket.chat/apps-engine/definition/App';
import { IAppInfo } from '@rocket.chat/apps-engine/definition/metadata';
import { WebhookEndpoint } from './endpoint';
import { MediafedProvider } from './videoConfProvider';
import { settings } from './settings';

export class MediafedApp extends App {
    constructor(info: IAppInfo, logger: ILogger, accessors: IAppAccessors) {
        super(info, logger, accessors);
    }

    /** Where mediafed sends call events: Site_Url + this App's public endpoint path. */
    public async webhookUrl(read: IRead): Promise<string> {
        const siteUrl = String((await read.getEnvironmentReader().getServerSettings().getValueById('Site_Url')) || '');
        const endpoint = this.getAccessors().providedApiEndpoints.find((e) => e.path === 'events');
        if (!siteUrl || !endpoint) {
            return '';
        }
        return siteUrl.replace(/\/+$/, '') + endpoint.computedPath;
    }

    protected async extendConfiguration(configuration: IConfigurationExtend, environmentRead: IEnvironmentRead): Promise<void> {
        await Promise.all(settings.map((setting) => configuration.settings.provideSetting(setting)));
        await configuration.api.provideApi({
            visibility: ApiVisibility.PUBLIC,
            security: ApiSecurity.UNSECURE,
            endpoints: [new WebhookEndpoint(this)],
        });
        await configuration.videoConfProviders.provideVideoConfProvider(
            new MediafedProvider((read) => this.webhookUrl(read)),
        );
    }
}

export default MediafedApp;
