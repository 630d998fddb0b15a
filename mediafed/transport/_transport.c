/* The media socket's native steps: the transport below the room core.
 *
 * - read_datagrams: the media socket's reader. recvmmsg batches (a datagram
 *   longer than MAX_DATAGRAM is dropped and counted), endpoint by packed
 *   source address, SRTP decrypted in place with libsrtp (as loaded by
 *   pylibsrtp), then ``endpoint.handler.on_rtp(endpoint, rx, length, now)``
 *   (the EndpointHandler the room core declares) for RTP, and the endpoint's
 *   own Python methods for the rest; anything not from a bound endpoint to
 *   ``on_other``;
 * - SendTarget: an endpoint's socket, outbound SRTP session and address. It
 *   numbers packets for transport-wide feedback, protects in place, sends and
 *   counts. The room core builds the packet (media/_forward.c, or Python) and
 *   hands it over, through the C API below or ``send_packet``.
 *
 * C API for the room core's native steps (a capsule, ``_C_API``): the
 * SendTarget type and ``send_buffer(target, buf, length)``, which protects and
 * sends ``length`` bytes in ``buf`` (room for BUFFER_SIZE) in place.
 *
 * Optional: without this module, or with MEDIAFED_PURE_PYTHON=1, the Python
 * reference runs (transport/udp.py, transport/target.py); the tests hold the
 * two to the same bytes out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "transport_api.h"

/* The largest datagram mediafed accepts (a larger one is dropped and counted),
 * hence the largest plaintext it ever protects; buffers hold it plus libsrtp's
 * largest trailer (SRTP_MAX_TRAILER_LEN: a 16-byte tag, a 128-byte MKI and the
 * 4-byte SRTCP index), so no SRTP or SRTCP profile can write past them.
 * transport/srtp.py has the same numbers. */
#define MAX_TRAILER 148
#define BUFFER_SIZE (MAX_DATAGRAM + MAX_TRAILER)

typedef int (*srtp_protect_fn)(void *ctx, void *rtp_hdr, int *len);

static srtp_protect_fn protect = NULL;
static srtp_protect_fn unprotect = NULL; /* srtp_unprotect has the same signature */
static unsigned char scratch[BUFFER_SIZE];

/* set_srtp(protect_address, unprotect_address): libsrtp's srtp_protect and
 * srtp_unprotect, as pylibsrtp's binding loaded them. */
static PyObject *
set_srtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_srtp takes 2 arguments");
        return NULL;
    }
    void *fn_protect = PyLong_AsVoidPtr(args[0]);
    if (fn_protect == NULL && PyErr_Occurred())
        return NULL;
    void *fn_unprotect = PyLong_AsVoidPtr(args[1]);
    if (fn_unprotect == NULL && PyErr_Occurred())
        return NULL;
    if (fn_protect == NULL || fn_unprotect == NULL) {
        PyErr_SetString(PyExc_ValueError, "set_srtp: addresses must not be 0");
        return NULL;
    }
    protect = (srtp_protect_fn)fn_protect;
    unprotect = (srtp_protect_fn)fn_unprotect;
    Py_RETURN_NONE;
}

/* -- SendTarget: where one endpoint's media goes --------------------------
 *
 * The transport's send side of one peer connection, as the media code holds
 * it: the socket, the outbound SRTP session and the peer's address. Its one
 * operation copies a plaintext RTP packet into a scratch buffer, rewrites the
 * header (and header extension ids) as asked, protects it and sends it, and
 * counts what happened. transport/target.py has the Python reference. */

#define SEND_SRTP_REFUSED -1
#define SEND_KERNEL_REFUSED -2
#define SEND_NOT_READY -3
#define SEND_OVERSIZE -4

typedef struct {
    PyObject_HEAD
    PyObject *srtp;  /* the SrtpContext whose session ``tx`` is (kept alive), or NULL */
    void *tx;        /* its outbound srtp_t */
    int fd;
    PyObject *stream; /* ICE-TCP: write(frame) -> bool of the connection; NULL: UDP */
    socklen_t addrlen; /* 0: no address yet */
    struct sockaddr_storage addr;
    unsigned long long datagrams_out;
    unsigned long long octets_out;
    unsigned long long send_errors;
    unsigned long long srtp_errors;
    unsigned long long oversize;
    /* Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-
     * extensions-01): every packet that carries the extension ``twcc_id`` gets
     * the next sequence number here, and when and how big it went is kept for
     * the feedback (media/bwe.py). */
    int twcc_id; /* 0: off */
    unsigned int twcc_seq;
    int probe; /* probe cluster stamped on what is sent now; -1: none */
    struct sent_record *sent;
} SendTarget;

#define SENT_HISTORY 8192 /* a power of two: several seconds at a few thousand packets/s */

struct sent_record {
    long long send_us; /* CLOCK_MONOTONIC, as time.monotonic() */
    int seq;           /* the 16-bit sequence number the slot holds; -1: none */
    int size;          /* bytes on the wire (SRTP) */
    int probe;
};

static PyTypeObject SendTargetType;

/* Where the value of header extension ``id`` (of ``size`` bytes) starts in an
 * RTP packet, or -1. One-byte (RFC 8285 §4.2) and two-byte (§4.3) forms. */
static Py_ssize_t
find_extension(const unsigned char *buf, Py_ssize_t length, int id, int size)
{
    if (!(buf[0] & 0x10))
        return -1;
    Py_ssize_t start = 12 + 4 * (buf[0] & 0x0F);
    if (start + 4 > length)
        return -1;
    unsigned int profile = ((unsigned int)buf[start] << 8) | buf[start + 1];
    Py_ssize_t pos = start + 4;
    Py_ssize_t end = pos + 4 * (((Py_ssize_t)buf[start + 2] << 8) | buf[start + 3]);
    if (end > length)
        return -1;
    if (profile == 0xBEDE) {
        while (pos < end) {
            unsigned char byte = buf[pos];
            if (byte == 0) {
                pos += 1;
                continue;
            }
            int ext_id = byte >> 4, ext_size = (byte & 0x0F) + 1;
            if (ext_id == 15 || pos + 1 + ext_size > end)
                return -1;
            if (ext_id == id)
                return ext_size == size ? pos + 1 : -1;
            pos += 1 + ext_size;
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (pos + 1 < end) {
            int ext_id = buf[pos];
            if (ext_id == 0) {
                pos += 1;
                continue;
            }
            int ext_size = buf[pos + 1];
            if (pos + 2 + ext_size > end)
                return -1;
            if (ext_id == id)
                return ext_size == size ? pos + 2 : -1;
            pos += 2 + ext_size;
        }
    }
    return -1;
}

static long long
monotonic_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000;
}

static PyObject *str_tx_address, *str_srtp, *str_on_srtp, *str_on_rtp, *str_rtp_failed,
    *str_rx_address, *str_handler, *str_stats, *str_rtp_in, *str_media_error;
/* The exception set is one that must end the read loop rather than be logged
 * and survived: KeyboardInterrupt, SystemExit (anything not an Exception) and
 * MemoryError. */
static int
fatal_error(void)
{
    return !PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError);
}

/* An exception while handling one packet: endpoint.media_error(exc) logs it,
 * as Endpoint.on_rtp does, and the next datagram is read as usual. */
static PyObject *
report_media_error(PyObject *endpoint)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *call[3] = {NULL, endpoint, value ? value : Py_None};
    PyObject *result = PyObject_VectorcallMethod(str_media_error, call + 1,
                                                 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return result;
}

/* Hand ``len`` protected bytes to the ICE-TCP connection's writer, which
 * frames and queues them (transport/tcp.py): ``len``, or -1 when it dropped
 * them (its queue is full, or it closed). The writer is mediafed's own and does
 * not raise; should it, the error is reported as unraisable and the packet is
 * counted as refused. */
static ssize_t
write_stream(SendTarget *t, const unsigned char *buf, int len)
{
    PyObject *frame = PyBytes_FromStringAndSize((const char *)buf, len);
    if (frame == NULL) {
        PyErr_WriteUnraisable(t->stream);
        return -1;
    }
    PyObject *queued = PyObject_CallOneArg(t->stream, frame);
    Py_DECREF(frame);
    if (queued == NULL) {
        PyErr_WriteUnraisable(t->stream);
        return -1;
    }
    int ok = PyObject_IsTrue(queued);
    Py_DECREF(queued);
    if (ok < 0) {
        PyErr_WriteUnraisable(t->stream);
        return -1;
    }
    return ok ? len : -1;
}

/* Number (transport-wide sequence) and protect in place ``length`` bytes of
 * plaintext RTP in ``buf``, which has room for BUFFER_SIZE, about to be sent
 * to ``t``: the protected length, or a SEND_* code. */
static long
seal(SendTarget *t, unsigned char *buf, Py_ssize_t length)
{
    if (t->tx == NULL || (t->addrlen == 0 && t->stream == NULL) || protect == NULL)
        return SEND_NOT_READY;
    if (length < 12 || length > MAX_DATAGRAM) {
        t->oversize += 1;
        return SEND_OVERSIZE;
    }
    Py_ssize_t twcc_at = t->twcc_id ? find_extension(buf, length, t->twcc_id, 2) : -1;
    unsigned int twcc_seq = t->twcc_seq & 0xFFFF;
    if (twcc_at >= 0) {
        buf[twcc_at] = (unsigned char)(twcc_seq >> 8);
        buf[twcc_at + 1] = (unsigned char)twcc_seq;
    }
    int len = (int)length;
    if (protect(t->tx, buf, &len) != 0) {
        t->srtp_errors += 1;
        return SEND_SRTP_REFUSED;
    }
    if (twcc_at >= 0 && t->sent != NULL) {
        /* Numbered even when the kernel refuses it: the receiver reports it lost. */
        struct sent_record *record = &t->sent[twcc_seq & (SENT_HISTORY - 1)];
        record->send_us = monotonic_us();
        record->seq = (int)twcc_seq;
        record->size = len;
        record->probe = t->probe;
        t->twcc_seq = (twcc_seq + 1) & 0xFFFF;
    }
    return len;
}

static long
counted(SendTarget *t, ssize_t sent, int len)
{
    if (sent < 0) {
        t->send_errors += 1;
        return SEND_KERNEL_REFUSED;
    }
    t->datagrams_out += 1;
    t->octets_out += (unsigned long long)len;
    return len;
}

/* Number, protect in place and send ``length`` bytes of plaintext RTP in
 * ``buf`` (room for BUFFER_SIZE): the protected length, or a SEND_* code.
 * Runs no Python, unless the peer is reached over ICE-TCP (a fallback path:
 * its writer is called). */
static long
send_buffer(SendTarget *t, unsigned char *buf, Py_ssize_t length)
{
    long len = seal(t, buf, length);
    if (len < 0)
        return len;
    ssize_t sent = t->stream != NULL
                       ? write_stream(t, buf, (int)len)
                       : sendto(t->fd, buf, (size_t)len, 0, (const struct sockaddr *)&t->addr,
                                t->addrlen);
    return counted(t, sent, (int)len);
}

/* The C API entry: ``target`` must be a SendTarget (the caller checked). */
static long
api_send_buffer(PyObject *target, unsigned char *buf, Py_ssize_t length)
{
    return send_buffer((SendTarget *)target, buf, length);
}

/* A fan-out's datagrams to UDP peers, sent with one sendmmsg per socket and up
 * to SEND_BATCH datagrams rather than one sendto each (on loopback the system
 * call's own cost is about a quarter of a send). Filled by queue_buffer and sent by
 * flush_out, which the fan-out calls before any Python runs and at its end:
 * no target queued here can go away or change meanwhile. */
#define SEND_BATCH 64
static struct mmsghdr out_msgs[SEND_BATCH];
static struct iovec out_iov[SEND_BATCH];
static unsigned char out_bufs[SEND_BATCH][BUFFER_SIZE];
static struct sockaddr_storage out_addrs[SEND_BATCH];
static SendTarget *out_targets[SEND_BATCH];
static int out_fd = -1;
static int out_n = 0;

static void
flush_out(void)
{
    int done = 0;
    while (done < out_n) {
        int n = sendmmsg(out_fd, out_msgs + done, (unsigned int)(out_n - done), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* the first one left was refused: counted as sendto would, then the rest */
            counted(out_targets[done], -1, 0);
            done += 1;
            continue;
        }
        for (int i = done; i < done + n; i++)
            counted(out_targets[i], 0, (int)out_iov[i].iov_len);
        done += n;
    }
    out_n = 0;
}

/* As send_buffer, but a UDP datagram waits in the batch (copied: ``buf`` is
 * free again on return) until flush_out; the protected length, or a SEND_*
 * code (the kernel's refusal is only counted, at the flush). */
static long
api_queue_buffer(PyObject *target, unsigned char *buf, Py_ssize_t length)
{
    SendTarget *t = (SendTarget *)target;
    if (t->stream != NULL) {
        flush_out();
        return send_buffer(t, buf, length);
    }
    if (out_n == SEND_BATCH || (out_n > 0 && out_fd != t->fd))
        flush_out();
    if (length < 0 || length > MAX_DATAGRAM)
        return seal(t, buf, length); /* (refused and counted) */
    unsigned char *slot = out_bufs[out_n];
    memcpy(slot, buf, (size_t)length);
    long len = seal(t, slot, length);
    if (len < 0)
        return len;
    int i = out_n++;
    out_fd = t->fd;
    out_targets[i] = t;
    out_iov[i].iov_base = slot;
    out_iov[i].iov_len = (size_t)len;
    memcpy(&out_addrs[i], &t->addr, t->addrlen);
    struct msghdr *hdr = &out_msgs[i].msg_hdr;
    memset(hdr, 0, sizeof *hdr);
    hdr->msg_name = &out_addrs[i];
    hdr->msg_namelen = t->addrlen;
    hdr->msg_iov = &out_iov[i];
    hdr->msg_iovlen = 1;
    return len;
}

static void
api_flush(void)
{
    if (out_n > 0)
        flush_out();
}

static int
SendTarget_init(SendTarget *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":SendTarget", kwlist))
        return -1;
    self->fd = -1;
    self->probe = -1;
    return 0;
}

static int
SendTarget_traverse(SendTarget *self, visitproc visit, void *arg)
{
    Py_VISIT(self->srtp);
    Py_VISIT(self->stream);
    return 0;
}

static void
clear_srtp(SendTarget *self)
{
    self->tx = NULL;
    Py_CLEAR(self->srtp);
}

static int
SendTarget_clear(SendTarget *self)
{
    clear_srtp(self);
    Py_CLEAR(self->stream);
    return 0;
}

static void
SendTarget_dealloc(SendTarget *self)
{
    PyObject_GC_UnTrack(self);
    SendTarget_clear(self);
    PyMem_Free(self->sent);
    self->sent = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}


/* set_socket(sock): the socket (or its file descriptor) datagrams leave from. */
static PyObject *
SendTarget_set_socket(SendTarget *self, PyObject *sock)
{
    int fd = -1;
    if (sock != Py_None) {
        fd = PyObject_AsFileDescriptor(sock);
        if (fd < 0)
            return NULL;
    }
    self->fd = fd;
    Py_RETURN_NONE;
}

/* set_address(sockaddr): the peer's address as a packed sockaddr_in(6), or None. */
static PyObject *
SendTarget_set_address(SendTarget *self, PyObject *sockaddr)
{
    if (sockaddr == Py_None) {
        self->addrlen = 0;
        Py_RETURN_NONE;
    }
    if (!PyBytes_Check(sockaddr)) {
        PyErr_SetString(PyExc_TypeError, "set_address: a packed socket address (bytes) or None");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(sockaddr);
    const char *raw = PyBytes_AS_STRING(sockaddr);
    sa_family_t family = 0;
    if (size >= (Py_ssize_t)sizeof(sa_family_t))
        memcpy(&family, raw, sizeof(family));
    if (!((size == (Py_ssize_t)sizeof(struct sockaddr_in) && family == AF_INET) ||
          (size == (Py_ssize_t)sizeof(struct sockaddr_in6) && family == AF_INET6))) {
        PyErr_SetString(PyExc_ValueError,
                        "set_address: not a packed sockaddr_in or sockaddr_in6");
        return NULL;
    }
    memcpy(&self->addr, raw, (size_t)size);
    self->addrlen = (socklen_t)size;
    Py_RETURN_NONE;
}

/* set_stream(write): ICE-TCP, the connection's ``write(frame) -> bool``
 * that frames (RFC 4571) and queues a protected packet; it takes precedence
 * over the address. None: back to UDP. */
static PyObject *
SendTarget_set_stream(SendTarget *self, PyObject *write)
{
    if (write != Py_None && !PyCallable_Check(write)) {
        PyErr_SetString(PyExc_TypeError, "set_stream: a callable or None");
        return NULL;
    }
    if (write == Py_None) {
        Py_CLEAR(self->stream);
    } else {
        Py_INCREF(write);
        Py_XSETREF(self->stream, write);
    }
    Py_RETURN_NONE;
}

/* set_srtp(context): the SrtpContext whose outbound session protects, or None. */
static PyObject *
SendTarget_set_srtp(SendTarget *self, PyObject *context)
{
    if (context == Py_None) {
        clear_srtp(self);
        Py_RETURN_NONE;
    }
    PyObject *address = PyObject_GetAttr(context, str_tx_address);
    if (address == NULL)
        return NULL;
    void *tx = PyLong_AsVoidPtr(address);
    Py_DECREF(address);
    if (tx == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "set_srtp: the context has no outbound session");
        return NULL;
    }
    Py_INCREF(context);
    Py_XSETREF(self->srtp, context);
    self->tx = tx;
    Py_RETURN_NONE;
}

/* send_packet(packet) -> int: a whole plaintext RTP packet (bytes-like),
 * copied, numbered, protected and sent. Returns the protected length, or -1
 * (libsrtp refused), -2 (the kernel refused), -3 (no address or keys yet),
 * -4 (shorter than a header or longer than MAX_DATAGRAM); each is counted. */
static PyObject *
SendTarget_send_packet(SendTarget *self, PyObject *arg)
{
    Py_buffer packet;
    if (PyObject_GetBuffer(arg, &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    long result;
    if (packet.len > MAX_DATAGRAM || packet.len < 12) {
        int path = self->addrlen != 0 || self->stream != NULL;
        result = self->tx == NULL || !path ? SEND_NOT_READY : SEND_OVERSIZE;
        if (result == SEND_OVERSIZE)
            self->oversize += 1;
    } else {
        memcpy(scratch, packet.buf, (size_t)packet.len);
        result = send_buffer(self, scratch, packet.len);
    }
    PyBuffer_Release(&packet);
    return PyLong_FromLong(result);
}
/* set_twcc(ext_id): number packets carrying header extension ``ext_id`` (the
 * id the peer negotiated for transport-wide-cc); 0 turns it off. */
static PyObject *
SendTarget_set_twcc(SendTarget *self, PyObject *arg)
{
    long ext_id = PyLong_AsLong(arg);
    if (ext_id == -1 && PyErr_Occurred())
        return NULL;
    if (ext_id < 0 || ext_id > 255) {
        PyErr_SetString(PyExc_ValueError, "set_twcc: an extension id is 1-255 (0: off)");
        return NULL;
    }
    if (ext_id && self->sent == NULL) {
        self->sent = PyMem_Malloc(sizeof(struct sent_record) * SENT_HISTORY);
        if (self->sent == NULL)
            return PyErr_NoMemory();
        for (int i = 0; i < SENT_HISTORY; i++)
            self->sent[i].seq = -1;
    }
    self->twcc_id = (int)ext_id;
    Py_RETURN_NONE;
}

/* set_probe(cluster): stamp packets sent from now on with probe cluster
 * ``cluster`` (-1: none). */
static PyObject *
SendTarget_set_probe(SendTarget *self, PyObject *arg)
{
    long cluster = PyLong_AsLong(arg);
    if (cluster == -1 && PyErr_Occurred())
        return NULL;
    self->probe = cluster < 0 ? -1 : (int)(cluster & 0x7FFFFFFF);
    Py_RETURN_NONE;
}

/* sent(first_seq, count) -> list: for each transport-wide sequence number from
 * ``first_seq`` (16 bits, wrapping), (send time in microseconds of the
 * monotonic clock, bytes, probe cluster or -1), or None when it is not (or no
 * longer) known. */
static PyObject *
SendTarget_sent(SendTarget *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "sent takes 2 arguments");
        return NULL;
    }
    long first = PyLong_AsLong(args[0]);
    long count = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (count < 0 || count > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "sent: count must be 0-65535");
        return NULL;
    }
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (long i = 0; i < count; i++) {
        int seq = (int)((first + i) & 0xFFFF);
        PyObject *item;
        struct sent_record *record =
            self->sent == NULL ? NULL : &self->sent[seq & (SENT_HISTORY - 1)];
        if (record == NULL || record->seq != seq) {
            item = Py_None;
            Py_INCREF(item);
        } else {
            item = Py_BuildValue("(Lii)", record->send_us, record->size, record->probe);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *
SendTarget_get_ready(SendTarget *self, void *closure)
{
    return PyBool_FromLong(self->tx != NULL && (self->addrlen != 0 || self->stream != NULL));
}

static PyMethodDef SendTarget_methods[] = {
    {"set_socket", (PyCFunction)SendTarget_set_socket, METH_O,
     "The socket (or file descriptor) datagrams leave from; None: none."},
    {"set_address", (PyCFunction)SendTarget_set_address, METH_O,
     "The peer's address, a packed sockaddr_in or sockaddr_in6; None: none."},
    {"set_stream", (PyCFunction)SendTarget_set_stream, METH_O,
     "ICE-TCP: the connection's write(frame) -> bool; None: UDP to the address."},
    {"set_srtp", (PyCFunction)SendTarget_set_srtp, METH_O,
     "The SrtpContext whose outbound session protects; None: none."},
    {"send_packet", (PyCFunction)SendTarget_send_packet, METH_O,
     "Protect and send one whole RTP packet; the protected length or a negative code."},
    {"set_twcc", (PyCFunction)SendTarget_set_twcc, METH_O,
     "Number packets carrying this transport-wide-cc extension id (0: off)."},
    {"set_probe", (PyCFunction)SendTarget_set_probe, METH_O,
     "Stamp what is sent from now on with this probe cluster (-1: none)."},
    {"sent", (PyCFunction)(void (*)(void))SendTarget_sent, METH_FASTCALL,
     "(send_us, size, probe) or None per transport-wide sequence number."},
    {NULL},
};

static PyMemberDef SendTarget_members[] = {
    {"fd", T_INT, offsetof(SendTarget, fd), READONLY, "the socket's file descriptor"},
    {"datagrams_out", T_ULONGLONG, offsetof(SendTarget, datagrams_out), READONLY, NULL},
    {"octets_out", T_ULONGLONG, offsetof(SendTarget, octets_out), READONLY, NULL},
    {"send_errors", T_ULONGLONG, offsetof(SendTarget, send_errors), READONLY,
     "datagrams the kernel refused"},
    {"srtp_errors", T_ULONGLONG, offsetof(SendTarget, srtp_errors), READONLY,
     "packets libsrtp refused to protect"},
    {"oversize", T_ULONGLONG, offsetof(SendTarget, oversize), READONLY,
     "packets shorter than a header or longer than MAX_DATAGRAM, not sent"},
    {"twcc_id", T_INT, offsetof(SendTarget, twcc_id), READONLY, NULL},
    {"twcc_seq", T_UINT, offsetof(SendTarget, twcc_seq), READONLY,
     "the next transport-wide sequence number"},
    {NULL},
};

static PyGetSetDef SendTarget_getset[] = {
    {"ready", (getter)SendTarget_get_ready, NULL, "a path (address or stream) and keys are set",
     NULL},
    {NULL},
};

static PyTypeObject SendTargetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.transport._transport.SendTarget",
    .tp_doc = "Socket, outbound SRTP session and address of one endpoint's media.",
    .tp_basicsize = sizeof(SendTarget),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SendTarget_init,
    .tp_dealloc = (destructor)SendTarget_dealloc,
    .tp_traverse = (traverseproc)SendTarget_traverse,
    .tp_clear = (inquiry)SendTarget_clear,
    .tp_methods = SendTarget_methods,
    .tp_members = SendTarget_members,
    .tp_getset = SendTarget_getset,
};

#define MAX_READS 64

/* Datagrams are read in batches (one recvmmsg call: a wake-up that finds one
 * packet costs one system call, not a read and a second read that fails). */
#define BATCH 16
static unsigned char batch_buffers[BATCH][MAX_DATAGRAM];
static struct sockaddr_storage batch_from[BATCH];
static struct iovec batch_iov[BATCH];
static struct mmsghdr batch_msgs[BATCH];

static PyObject *str_datagrams_in, *str_dropped_oversize, *str_recv_errors;

/* counters[key] += n for a dict (None: nothing); 0 or -1 with an exception. */
static int
count(PyObject *counters, PyObject *key, long long n)
{
    if (counters == Py_None || n == 0)
        return 0;
    PyObject *before = PyDict_GetItemWithError(counters, key);
    if (before == NULL && PyErr_Occurred())
        return -1;
    long long total = n;
    if (before != NULL) {
        total += PyLong_AsLongLong(before);
        if (PyErr_Occurred())
            return -1;
    }
    PyObject *after = PyLong_FromLongLong(total);
    if (after == NULL)
        return -1;
    int result = PyDict_SetItem(counters, key, after);
    Py_DECREF(after);
    return result;
}

/* Plaintext RTP of ``endpoint``: counted, then
 * ``endpoint.handler.on_rtp(endpoint, rx, length, now)`` (EndpointHandler,
 * transport/endpoint.py). An exception is the endpoint's to log
 * (``media_error``) unless it must end the loop. New reference, or NULL. */
static PyObject *
rtp_in(PyObject *endpoint, PyObject *rx, int length, PyObject *now_obj)
{
    PyObject *stats = PyObject_GetAttr(endpoint, str_stats);
    if (stats == NULL)
        return NULL;
    int counted = PyDict_Check(stats) ? count(stats, str_rtp_in, 1) : 0;
    Py_DECREF(stats);
    if (counted < 0)
        return NULL;
    PyObject *handler = PyObject_GetAttr(endpoint, str_handler);
    if (handler == NULL)
        return NULL;
    PyObject *length_obj = PyLong_FromLong(length);
    PyObject *result = NULL;
    if (length_obj != NULL) {
        PyObject *call[6] = {NULL, handler, endpoint, rx, length_obj, now_obj};
        result = PyObject_VectorcallMethod(str_on_rtp, call + 1,
                                           5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(length_obj);
    }
    Py_DECREF(handler);
    if (result == NULL && !fatal_error())
        return report_media_error(endpoint);
    return result;
}

/* One SRTP datagram of a bound endpoint: decrypted here when the endpoint has
 * keys and handed to its handler (the new reference to the result of the
 * Python call, NULL on error). */
static PyObject *
media_in(PyObject *endpoint, PyObject *rx, unsigned char *buf, ssize_t n, PyObject *length_obj,
         PyObject *now_obj)
{
    if (n >= 12 && !(buf[1] >= 192 && buf[1] <= 223) && unprotect != NULL) {
        PyObject *srtp = PyObject_GetAttr(endpoint, str_srtp);
        if (srtp == NULL)
            return NULL;
        if (srtp != Py_None) {
            PyObject *address = PyObject_GetAttr(srtp, str_rx_address);
            Py_DECREF(srtp);
            if (address == NULL)
                return NULL;
            void *ctx = PyLong_AsVoidPtr(address);
            Py_DECREF(address);
            if (ctx == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "endpoint.srtp has no inbound session");
                return NULL;
            }
            int len = (int)n;
            if (unprotect(ctx, buf, &len) != 0) {
                PyObject *call[2] = {NULL, endpoint};
                return PyObject_VectorcallMethod(str_rtp_failed, call + 1,
                                                 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
            return rtp_in(endpoint, rx, len, now_obj);
        }
        Py_DECREF(srtp);
    }
    PyObject *call[5] = {NULL, endpoint, rx, length_obj, now_obj};
    return PyObject_VectorcallMethod(str_on_srtp, call + 1, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

/* One datagram, copied into ``view``: to its endpoint or to on_other.
 * 0, or -1 with an exception. */
static int
dispatch(unsigned char *buf, ssize_t n, const struct sockaddr_storage *from, socklen_t fromlen,
         PyObject *rx, PyObject *by_sockaddr, PyObject *on_other, PyObject *now_obj)
{
    PyObject *addr_obj = PyBytes_FromStringAndSize((const char *)from, (Py_ssize_t)fromlen);
    PyObject *length_obj = PyLong_FromSsize_t(n);
    PyObject *result = NULL;
    int failed = 0;
    if (addr_obj == NULL || length_obj == NULL) {
        failed = 1;
    } else {
        PyObject *endpoint = NULL;
        if (buf[0] >= 128 && buf[0] <= 191) {
            endpoint = PyDict_GetItemWithError(by_sockaddr, addr_obj); /* borrowed */
            if (endpoint == NULL && PyErr_Occurred())
                failed = 1;
        }
        if (!failed && endpoint != NULL) {
            Py_INCREF(endpoint);
            result = media_in(endpoint, rx, buf, n, length_obj, now_obj);
            Py_DECREF(endpoint);
        } else if (!failed) {
            PyObject *call[4] = {NULL, length_obj, addr_obj, now_obj};
            result =
                PyObject_Vectorcall(on_other, call + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        }
        if (result == NULL)
            failed = 1;
        Py_XDECREF(result);
    }
    Py_XDECREF(addr_obj);
    Py_XDECREF(length_obj);
    return failed ? -1 : 0;
}

/* read_datagrams(fd, rx, view, by_sockaddr, on_other, now, counters) -> int
 *
 * ``now`` may be None: then CLOCK_MONOTONIC (time.monotonic()'s clock) is
 * read here, so the function can be the socket's reader callback itself.
 * ``counters``, a dict or None, gets "datagrams_in" increased by the count. */
static PyObject *
read_datagrams(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "read_datagrams takes 7 arguments");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    double now;
    if (args[5] == Py_None) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    } else {
        now = PyFloat_AsDouble(args[5]);
    }
    if (PyErr_Occurred())
        return NULL;
    PyObject *rx = args[1], *by_sockaddr = args[3], *on_other = args[4], *counters = args[6];
    if (!PyDict_Check(by_sockaddr)) {
        PyErr_SetString(PyExc_TypeError, "read_datagrams: by_sockaddr must be a dict");
        return NULL;
    }
    if (counters != Py_None && !PyDict_Check(counters)) {
        PyErr_SetString(PyExc_TypeError, "read_datagrams: counters must be a dict or None");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[2], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (view.len < MAX_DATAGRAM) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "read_datagrams: the buffer must hold MAX_DATAGRAM bytes");
        return NULL;
    }
    PyObject *now_obj = PyFloat_FromDouble(now);
    if (now_obj == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long count_in = 0, oversize = 0, errors = 0;
    int failed = 0;
    unsigned char *buf = (unsigned char *)view.buf;
    for (int reads = 0; reads < MAX_READS && !failed;) {
        for (int k = 0; k < BATCH; k++) {
            batch_iov[k].iov_base = batch_buffers[k];
            batch_iov[k].iov_len = MAX_DATAGRAM;
            memset(&batch_msgs[k], 0, sizeof(batch_msgs[k]));
            batch_msgs[k].msg_hdr.msg_name = &batch_from[k];
            batch_msgs[k].msg_hdr.msg_namelen = sizeof(batch_from[k]);
            batch_msgs[k].msg_hdr.msg_iov = &batch_iov[k];
            batch_msgs[k].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, batch_msgs, BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            errors++;
            /* ICMP errors of earlier sends surface here on Linux: the next read is
             * fine. Anything else is not expected to pass: stop until the next
             * wake-up rather than spin. */
            if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH ||
                errno == EHOSTDOWN || errno == ENETDOWN) {
                reads++;
                continue;
            }
            break;
        }
        reads += got;
        for (int k = 0; k < got && !failed; k++) {
            ssize_t n = (ssize_t)batch_msgs[k].msg_len;
            count_in++;
            if (batch_msgs[k].msg_hdr.msg_flags & MSG_TRUNC) {
                oversize++; /* longer than MAX_DATAGRAM: cut short by the kernel, dropped */
                continue;
            }
            if (n == 0)
                continue;
            socklen_t fromlen = batch_msgs[k].msg_hdr.msg_namelen;
            if (fromlen > sizeof(batch_from[k]))
                fromlen = sizeof(batch_from[k]);
            memcpy(buf, batch_buffers[k], (size_t)n);
            if (dispatch(buf, n, &batch_from[k], fromlen, rx, by_sockaddr, on_other, now_obj) <
                0) {
                if (fatal_error()) {
                    failed = 1; /* KeyboardInterrupt, MemoryError...: the loop must see it */
                } else {
                    /* Handlers log their own errors; one escaping is printed, and the
                     * rest of the batch, already read, is still handled. */
                    PyErr_WriteUnraisable(on_other);
                }
            }
        }
        if (got < BATCH)
            break; /* the socket is drained */
    }
    Py_DECREF(now_obj);
    PyBuffer_Release(&view);
    if (!failed && (count(counters, str_datagrams_in, count_in) < 0 ||
                    count(counters, str_dropped_oversize, oversize) < 0 ||
                    count(counters, str_recv_errors, errors) < 0))
        failed = 1;
    if (failed)
        return NULL;
    return PyLong_FromLong(count_in);
}

static PyMethodDef methods[] = {
    {"set_srtp", (PyCFunction)(void (*)(void))set_srtp, METH_FASTCALL,
     "Give the addresses of libsrtp's srtp_protect and srtp_unprotect."},
    {"read_datagrams", (PyCFunction)(void (*)(void))read_datagrams, METH_FASTCALL,
     "Read and dispatch what the media socket holds; how many datagrams."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mediafed.transport._transport", NULL, -1, methods,
};

static MediafedTransportAPI api = {
    TRANSPORT_API_VERSION, &SendTargetType, api_send_buffer, BUFFER_SIZE, MAX_DATAGRAM,
    api_queue_buffer, api_flush,
};

PyMODINIT_FUNC
PyInit__transport(void)
{
    if (PyType_Ready(&SendTargetType) < 0)
        return NULL;
    static const struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_srtp, "srtp"},
        {&str_tx_address, "tx_address"},
        {&str_on_srtp, "on_srtp"},
        {&str_on_rtp, "on_rtp"},
        {&str_rtp_failed, "rtp_failed"},
        {&str_rx_address, "rx_address"},
        {&str_datagrams_in, "datagrams_in"},
        {&str_dropped_oversize, "dropped_oversize"},
        {&str_recv_errors, "recv_errors"},
        {&str_handler, "handler"},
        {&str_stats, "stats"},
        {&str_rtp_in, "rtp_in"},
        {&str_media_error, "media_error"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New(&api, TRANSPORT_API_CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_DATAGRAM", MAX_DATAGRAM) < 0 ||
        PyModule_AddIntConstant(m, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SendTargetType);
    if (PyModule_AddObject(m, "SendTarget", (PyObject *)&SendTargetType) < 0) {
        Py_DECREF(&SendTargetType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
