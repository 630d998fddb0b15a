/* The C API of mediafed.transport._transport, for the room core's native steps
 * (media/_forward.c): a capsule named TRANSPORT_API_CAPSULE holding this
 * struct. The room core builds a packet; the transport numbers, protects and
 * sends it. Nothing else of the transport is reached from media's C code. */
#ifndef TRANSPORT_API_H
#define TRANSPORT_API_H

#include <Python.h>

#define TRANSPORT_API_CAPSULE "mediafed.transport._transport._C_API"
#define TRANSPORT_API_VERSION 2

/* The largest datagram mediafed accepts, hence the largest plaintext it ever
 * protects (transport/srtp.py has the same number). */
#define MAX_DATAGRAM 1900

typedef struct {
    int version;
    PyTypeObject *send_target_type;
    /* Protect in place and send ``length`` bytes of plaintext RTP in ``buf``
     * (room for ``buffer_size``) to ``target``, a send_target_type instance:
     * the protected length, or -1 (libsrtp refused), -2 (the kernel refused),
     * -3 (no address or keys yet), -4 (too short or long). Runs no Python,
     * unless the target is an ICE-TCP connection's (its writer is called). */
    long (*send_buffer)(PyObject *target, unsigned char *buf, Py_ssize_t length);
    int buffer_size;
    int max_datagram;
    /* As send_buffer, but a UDP datagram is copied into a batch and sent with
     * the others at the next flush() (one sendmmsg per socket); the kernel's
     * refusal is counted on the target then. The caller flushes before any
     * Python runs (which might change or free a queued target) and when done. */
    long (*queue_buffer)(PyObject *target, unsigned char *buf, Py_ssize_t length);
    void (*flush)(void);
} MediafedTransportAPI;

#endif
