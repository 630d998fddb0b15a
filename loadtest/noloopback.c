/*
 * LD_PRELOAD shim for the Janus load-test target (loadtest/janus.py).
 *
 * Janus 1.1.x skips every interface flagged IFF_LOOPBACK when it gathers ICE
 * host candidates (janus_ice_setup_local in src/ice.c), whatever
 * ice_enforce_list says.  The load test runs in a network namespace that has
 * only loopback, so this wrapper clears IFF_LOOPBACK in what getifaddrs()
 * returns.  It is loaded into the Janus process alone, never into the tool.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

typedef int (*getifaddrs_fn)(struct ifaddrs **);

int getifaddrs(struct ifaddrs **ifap) {
    static getifaddrs_fn real_getifaddrs = NULL;
    if (real_getifaddrs == NULL) {
        real_getifaddrs = (getifaddrs_fn)dlsym(RTLD_NEXT, "getifaddrs");
        if (real_getifaddrs == NULL) {
            return -1;
        }
    }
    int rc = real_getifaddrs(ifap);
    if (rc != 0) {
        return rc;
    }
    for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next) {
        ifa->ifa_flags &= ~(unsigned int)IFF_LOOPBACK;
    }
    return rc;
}
