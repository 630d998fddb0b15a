/* The forwarding hot path's native steps.
 *
 * mediafed decides in Python what happens to media (media/track.py,
 * media/peer.py, transport/udp.py); what it does to a packet in steady state
 * is mechanical and runs here, on the same state:
 *
 * - read_datagrams: the media socket's reader. recvmmsg batches (a datagram
 *   longer than MAX_DATAGRAM is dropped and counted), endpoint by packed
 *   source address, SRTP decrypted in place with libsrtp (as loaded by
 *   pylibsrtp), a packet of a stream the peer knows by SSRC handed to its
 *   layer (MediaPeer.on_rtp's work: extension scan, level, mute); anything
 *   else to Python;
 * - InStream / receive_rtp: the base of Layer and Layer.receive: RFC 3550
 *   receive statistics, the retransmission cache, keyframe detection when
 *   subscribers wait (a Python call), then the fan-out;
 * - SendTarget: an endpoint's socket, outbound SRTP session and address: copy
 *   into a scratch buffer, rewrite, protect, sendto, count;
 * - Forwarder / fanout: the base of DownTrack and the loop over a layer's
 *   DownTracks. One in steady state (synced, not waiting for a keyframe) only
 *   adds its offsets and sends through its SendTarget. Any other runs its
 *   Python forward();
 * - remap_and_scan: the header-extension pass, for the Python code.
 *
 * Python may run in the middle of a packet (a callback, a DownTrack's
 * forward()) and change any object: nothing read before such a call is used
 * after it without being read, checked and held again.
 *
 * Optional: when this module is not built, or MEDIAFED_PURE_PYTHON=1, the
 * Python reference runs (transport/native.py, transport/target.py); the tests
 * hold the two to the same bytes out and the same state.
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

/* The largest datagram mediafed accepts (a larger one is dropped and counted),
 * hence the largest plaintext it ever protects; buffers hold it plus libsrtp's
 * largest trailer (SRTP_MAX_TRAILER_LEN: a 16-byte tag, a 128-byte MKI and the
 * 4-byte SRTCP index), so no SRTP or SRTCP profile can write past them.
 * transport/srtp.py has the same numbers. */
#define MAX_DATAGRAM 1900
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

/* wire/rtp.py remap_extension_ids, byte for byte: one-byte extension ids (and
 * two-byte ids below 16) rewritten in place through ``table`` (16 entries);
 * nothing past ``length`` is read or written. */
static void
remap_ids(unsigned char *buf, Py_ssize_t length, const unsigned char *table)
{
    if (!(buf[0] & 0x10))
        return;
    Py_ssize_t start = 12 + 4 * (buf[0] & 0x0F);
    if (start + 4 > length)
        return;
    unsigned int profile = ((unsigned int)buf[start] << 8) | buf[start + 1];
    Py_ssize_t pos = start + 4;
    Py_ssize_t end = pos + 4 * (((Py_ssize_t)buf[start + 2] << 8) | buf[start + 3]);
    if (end > length)
        end = length;
    if (profile == 0xBEDE) {
        while (pos < end) {
            unsigned char byte = buf[pos];
            if (byte == 0) {
                pos += 1;
                continue;
            }
            int ext_id = byte >> 4;
            if (ext_id == 15)
                return;
            buf[pos] = (unsigned char)((table[ext_id] << 4) | (byte & 0x0F));
            pos += 2 + (byte & 0x0F);
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (pos + 1 < end) {
            unsigned char ext_id = buf[pos];
            if (ext_id == 0) {
                pos += 1;
                continue;
            }
            if (ext_id < 16)
                buf[pos] = table[ext_id];
            pos += 2 + buf[pos + 1];
        }
    }
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

/* Copy, rewrite (when ``rewrite``), remap extension ids (``remap``: 16 entries,
 * or NULL), protect and send one packet: the protected length, or a SEND_*
 * code. Runs no Python. */
static long
target_send(SendTarget *t, const unsigned char *packet, Py_ssize_t length, int rewrite,
            unsigned long b1, unsigned long seq, unsigned long ts, unsigned long ssrc,
            const unsigned char *remap)
{
    if (t->tx == NULL || t->addrlen == 0 || protect == NULL)
        return SEND_NOT_READY;
    if (length < 12 || length > MAX_DATAGRAM) {
        t->oversize += 1;
        return SEND_OVERSIZE;
    }
    memcpy(scratch, packet, (size_t)length);
    if (rewrite) {
        scratch[1] = (unsigned char)b1;
        scratch[2] = (unsigned char)(seq >> 8);
        scratch[3] = (unsigned char)seq;
        scratch[4] = (unsigned char)(ts >> 24);
        scratch[5] = (unsigned char)(ts >> 16);
        scratch[6] = (unsigned char)(ts >> 8);
        scratch[7] = (unsigned char)ts;
        scratch[8] = (unsigned char)(ssrc >> 24);
        scratch[9] = (unsigned char)(ssrc >> 16);
        scratch[10] = (unsigned char)(ssrc >> 8);
        scratch[11] = (unsigned char)ssrc;
    }
    if (remap != NULL)
        remap_ids(scratch, length, remap);
    Py_ssize_t twcc_at = t->twcc_id ? find_extension(scratch, length, t->twcc_id, 2) : -1;
    unsigned int twcc_seq = t->twcc_seq & 0xFFFF;
    if (twcc_at >= 0) {
        scratch[twcc_at] = (unsigned char)(twcc_seq >> 8);
        scratch[twcc_at + 1] = (unsigned char)twcc_seq;
    }
    int len = (int)length;
    if (protect(t->tx, scratch, &len) != 0) {
        t->srtp_errors += 1;
        return SEND_SRTP_REFUSED;
    }
    ssize_t sent = sendto(t->fd, scratch, (size_t)len, 0, (const struct sockaddr *)&t->addr,
                          t->addrlen);
    if (twcc_at >= 0 && t->sent != NULL) {
        /* Numbered even when the kernel refused it: the receiver reports it lost. */
        struct sent_record *record = &t->sent[twcc_seq & (SENT_HISTORY - 1)];
        record->send_us = monotonic_us();
        record->seq = (int)twcc_seq;
        record->size = len;
        record->probe = t->probe;
        t->twcc_seq = (twcc_seq + 1) & 0xFFFF;
    }
    if (sent < 0) {
        t->send_errors += 1;
        return SEND_KERNEL_REFUSED;
    }
    t->datagrams_out += 1;
    t->octets_out += (unsigned long long)len;
    return len;
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
    return 0;
}

static int
SendTarget_clear(SendTarget *self)
{
    self->tx = NULL;
    Py_CLEAR(self->srtp);
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

static PyObject *str_tx_address, *str_srtp;

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

/* set_srtp(context): the SrtpContext whose outbound session protects, or None. */
static PyObject *
SendTarget_set_srtp(SendTarget *self, PyObject *context)
{
    if (context == Py_None) {
        SendTarget_clear(self);
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

/* The bytes of ``obj`` as an extension id table: 1 (``*table`` set), 0 for
 * None (no rewrite), -1 with an exception. */
static int
remap_table(PyObject *obj, const unsigned char **table)
{
    *table = NULL;
    if (obj == NULL || obj == Py_None)
        return 0;
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) < 16) {
        PyErr_SetString(PyExc_TypeError, "ext_remap must be 16 bytes or None");
        return -1;
    }
    *table = (const unsigned char *)PyBytes_AS_STRING(obj);
    return 1;
}

/* send_rtp(packet, length, b1, seq, ts, ssrc, ext_remap=None) -> int
 *
 * The first ``length`` bytes of ``packet`` (plaintext RTP) with the second
 * header byte, sequence number, timestamp and SSRC replaced and, with a
 * table, the one-byte extension ids rewritten: protected and sent. Returns
 * the protected length, or -1 (libsrtp refused), -2 (the kernel refused),
 * -3 (no address or keys yet), -4 (shorter than a header or longer than
 * MAX_DATAGRAM); each is counted. */
static PyObject *
SendTarget_send_rtp(SendTarget *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "send_rtp takes 6 or 7 arguments");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    unsigned long b1 = PyLong_AsUnsignedLongMask(args[2]);
    unsigned long seq = PyLong_AsUnsignedLongMask(args[3]);
    unsigned long ts = PyLong_AsUnsignedLongMask(args[4]);
    unsigned long ssrc = PyLong_AsUnsignedLongMask(args[5]);
    if (PyErr_Occurred())
        return NULL;
    const unsigned char *table = NULL;
    if (remap_table(nargs == 7 ? args[6] : NULL, &table) < 0)
        return NULL;
    Py_buffer packet;
    if (PyObject_GetBuffer(args[0], &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    long result;
    if (length < 0 || length > packet.len) {
        PyErr_SetString(PyExc_ValueError, "send_rtp: length must fit the packet");
        result = 0;
    } else {
        result = target_send(self, (const unsigned char *)packet.buf, length, 1, b1, seq, ts, ssrc,
                             table);
    }
    PyBuffer_Release(&packet);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(result);
}

/* send_packet(packet) -> int: a whole plaintext RTP packet, protected and sent
 * as it is (retransmissions); results as send_rtp. */
static PyObject *
SendTarget_send_packet(SendTarget *self, PyObject *arg)
{
    Py_buffer packet;
    if (PyObject_GetBuffer(arg, &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    long result = target_send(self, (const unsigned char *)packet.buf, packet.len, 0, 0, 0, 0, 0,
                              NULL);
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
    return PyBool_FromLong(self->tx != NULL && self->addrlen != 0);
}

static PyMethodDef SendTarget_methods[] = {
    {"set_socket", (PyCFunction)SendTarget_set_socket, METH_O,
     "The socket (or file descriptor) datagrams leave from; None: none."},
    {"set_address", (PyCFunction)SendTarget_set_address, METH_O,
     "The peer's address, a packed sockaddr_in or sockaddr_in6; None: none."},
    {"set_srtp", (PyCFunction)SendTarget_set_srtp, METH_O,
     "The SrtpContext whose outbound session protects; None: none."},
    {"send_rtp", (PyCFunction)(void (*)(void))SendTarget_send_rtp, METH_FASTCALL,
     "Rewrite, protect and send one RTP packet; the protected length or a negative code."},
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
    {"ready", (getter)SendTarget_get_ready, NULL, "an address and keys are set", NULL},
    {NULL},
};

static PyTypeObject SendTargetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.transport._hotpath.SendTarget",
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

/* -- Forwarder: the per-subscriber state the fan-out reads and writes ------
 *
 * DownTrack (media/track.py) derives from this type. Its forwarding fields
 * live here as C members, so the fan-out below forwards a packet to a
 * subscriber in steady state (synced, not waiting for a keyframe) through its
 * SendTarget without running Python; every other case calls the DownTrack's
 * own forward(), which stays the reference. */

typedef struct {
    PyObject_HEAD
    PyObject *target;    /* the subscriber's send target (native ones are sent to here) */
    PyObject *ext_remap; /* bytes, or None: no extension id rewrite */
    unsigned int seq_off;
    unsigned int ts_off;
    unsigned int seq_out;
    unsigned int ts_out;
    unsigned int ssrc;
    int payload_type;
    char needs_keyframe;
    char synced;
    char switching; /* between two layers until a keyframe: Python decides */
    unsigned long long packets_sent;
    unsigned long long octets_sent;
    double time_out;
} Forwarder;

static int
Forwarder_traverse(Forwarder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->target);
    Py_VISIT(self->ext_remap);
    return 0;
}

static int
Forwarder_clear(Forwarder *self)
{
    Py_CLEAR(self->target);
    Py_CLEAR(self->ext_remap);
    return 0;
}

static void
Forwarder_dealloc(Forwarder *self)
{
    PyObject_GC_UnTrack(self);
    Forwarder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Forwarder_members[] = {
    {"target", T_OBJECT_EX, offsetof(Forwarder, target), 0,
     "the subscriber's send target; a native SendTarget is sent to without Python"},
    {"ext_remap", T_OBJECT, offsetof(Forwarder, ext_remap), 0, "extension id table or None"},
    {"seq_off", T_UINT, offsetof(Forwarder, seq_off), 0, NULL},
    {"ts_off", T_UINT, offsetof(Forwarder, ts_off), 0, NULL},
    {"seq_out", T_UINT, offsetof(Forwarder, seq_out), 0, NULL},
    {"ts_out", T_UINT, offsetof(Forwarder, ts_out), 0, NULL},
    {"ssrc", T_UINT, offsetof(Forwarder, ssrc), 0, NULL},
    {"payload_type", T_INT, offsetof(Forwarder, payload_type), 0, NULL},
    {"needs_keyframe", T_BOOL, offsetof(Forwarder, needs_keyframe), 0, NULL},
    {"synced", T_BOOL, offsetof(Forwarder, synced), 0, NULL},
    {"switching", T_BOOL, offsetof(Forwarder, switching), 0, NULL},
    {"packets_sent", T_ULONGLONG, offsetof(Forwarder, packets_sent), 0, NULL},
    {"octets_sent", T_ULONGLONG, offsetof(Forwarder, octets_sent), 0, NULL},
    {"time_out", T_DOUBLE, offsetof(Forwarder, time_out), 0, NULL},
    {NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.transport._hotpath.Forwarder",
    .tp_doc = "Forwarding state of one subscriber's track (base of DownTrack).",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_traverse = (traverseproc)Forwarder_traverse,
    .tp_clear = (inquiry)Forwarder_clear,
    .tp_members = Forwarder_members,
};

static PyObject *str_forward;

/* The fan-out loop. ``args`` are the Python objects of the eight fanout()
 * arguments when the caller has them; otherwise (NULL) they are made on the
 * first DownTrack that needs its Python forward(). 0 or -1 with an exception.
 * ``packet`` must stay valid across Python calls (the caller holds its owner). */
static int
fanout_list(PyObject *list, PyObject *packet_obj, const unsigned char *packet, Py_ssize_t length,
            unsigned long b1, unsigned long seq, unsigned long ts, int keyframe, double now,
            PyObject *const *args)
{
    PyObject *made[8] = {NULL};
    int failed = 0;
    /* The list may change under a Python forward(): index it afresh each turn. */
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_INCREF(item);
        int done = 0;
        if (PyObject_TypeCheck(item, &ForwarderType)) {
            Forwarder *f = (Forwarder *)item;
            const unsigned char *table = NULL;
            if (!f->needs_keyframe && f->synced && !f->switching && f->target != NULL &&
                PyObject_TypeCheck(f->target, &SendTargetType) &&
                remap_table(f->ext_remap, &table) >= 0) {
                /* No Python runs from here to the end of the send. */
                unsigned long seq_out = (seq + f->seq_off) & 0xFFFFUL;
                unsigned long ts_out = (ts + f->ts_off) & 0xFFFFFFFFUL;
                long sent = target_send((SendTarget *)f->target, packet, length, 1,
                                        (b1 & 0x80) | ((unsigned long)f->payload_type & 0x7F),
                                        seq_out, ts_out, f->ssrc, table);
                if (sent >= 0) {
                    f->seq_out = (unsigned int)seq_out;
                    f->ts_out = (unsigned int)ts_out;
                    f->time_out = now;
                    f->packets_sent += 1;
                    f->octets_sent += (unsigned long long)length;
                }
                done = 1;
            } else if (PyErr_Occurred()) {
                PyErr_Clear(); /* a bad ext_remap: the Python forward() says so */
            }
        }
        if (!done && !failed && args == NULL && made[0] == NULL) {
            made[0] = list;
            Py_INCREF(list);
            made[1] = packet_obj;
            Py_INCREF(packet_obj);
            made[2] = PyLong_FromSsize_t(length);
            made[3] = PyLong_FromUnsignedLong(b1);
            made[4] = PyLong_FromUnsignedLong(seq);
            made[5] = PyLong_FromUnsignedLong(ts);
            made[6] = PyBool_FromLong(keyframe);
            made[7] = PyFloat_FromDouble(now);
            for (int k = 2; k < 8; k++)
                if (made[k] == NULL)
                    failed = 1;
        }
        if (!done && !failed) {
            PyObject *const *a = args != NULL ? args : made;
            PyObject *call[9] = {NULL, item, a[1], a[2], a[3], a[4], a[5], a[6], a[7]};
            PyObject *result = PyObject_VectorcallMethod(
                str_forward, call + 1, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            if (result == NULL)
                failed = 1;
            Py_XDECREF(result);
        }
        Py_DECREF(item);
    }
    for (int k = 0; k < 8; k++)
        Py_XDECREF(made[k]);
    return failed ? -1 : 0;
}

/* fanout(downtracks, packet, length, b1, seq, ts, keyframe, now) -> None
 *
 * What ``for d in downtracks: d.forward(packet, length, b1, seq, ts, keyframe,
 * now)`` does, with the steady-state case of each Forwarder done here. */
static PyObject *
fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "fanout takes 8 arguments");
        return NULL;
    }
    PyObject *list = args[0];
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "fanout: downtracks must be a list");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    unsigned long b1 = PyLong_AsUnsignedLongMask(args[3]);
    unsigned long seq = PyLong_AsUnsignedLongMask(args[4]);
    unsigned long ts = PyLong_AsUnsignedLongMask(args[5]);
    int keyframe = PyObject_IsTrue(args[6]);
    double now = PyFloat_AsDouble(args[7]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fanout: packet must be bytes");
        return NULL;
    }
    if (length < 12 || length > PyBytes_GET_SIZE(args[1]) || length > MAX_DATAGRAM) {
        PyErr_SetString(PyExc_ValueError, "fanout: bad packet length");
        return NULL;
    }
    Py_INCREF(list);
    int failed = fanout_list(list, args[1], (const unsigned char *)PyBytes_AS_STRING(args[1]),
                             length, b1, seq, ts, keyframe, now, args);
    Py_DECREF(list);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* -- InStream: a received stream's state (base of Layer) --------------------
 *
 * Layer (media/track.py) derives from this type: the statistics its receive
 * path keeps (RFC 3550 A.3 and A.8), its retransmission cache and the list of
 * DownTracks forwarding it live here, so receive_rtp() below does what
 * Layer.receive does (the reference) without running Python for a packet
 * in order; gaps (NACK bookkeeping), keyframe detection for waiting
 * subscribers and the cache stay Python calls. */

typedef struct {
    PyObject_HEAD
    PyObject *track;
    PyObject *downtracks; /* list of DownTracks */
    PyObject *cache;      /* RetransmissionCache */
    PyObject *missing;    /* dict: sequence -> [last NACK time, tries] */
    long long received;
    long long octets;
    long long cycles;
    long base_seq; /* -1 before the first packet */
    long highest_seq;
    long last_seq;
    unsigned int last_ts;
    double last_transit;
    double jitter;
    double last_packet_at;
    double last_keyframe_at;
    int clock_rate;
    int keyframe_waiters;
    int level;
} InStream;

static int
InStream_traverse(InStream *self, visitproc visit, void *arg)
{
    Py_VISIT(self->track);
    Py_VISIT(self->downtracks);
    Py_VISIT(self->cache);
    Py_VISIT(self->missing);
    return 0;
}

static int
InStream_clear(InStream *self)
{
    Py_CLEAR(self->track);
    Py_CLEAR(self->downtracks);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->missing);
    return 0;
}

static void
InStream_dealloc(InStream *self)
{
    PyObject_GC_UnTrack(self);
    InStream_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef InStream_members[] = {
    {"track", T_OBJECT, offsetof(InStream, track), 0, NULL},
    {"downtracks", T_OBJECT, offsetof(InStream, downtracks), 0, NULL},
    {"cache", T_OBJECT, offsetof(InStream, cache), 0, NULL},
    {"missing", T_OBJECT, offsetof(InStream, missing), 0, NULL},
    {"received", T_LONGLONG, offsetof(InStream, received), 0, NULL},
    {"octets", T_LONGLONG, offsetof(InStream, octets), 0, NULL},
    {"cycles", T_LONGLONG, offsetof(InStream, cycles), 0, NULL},
    {"base_seq", T_LONG, offsetof(InStream, base_seq), 0, NULL},
    {"highest_seq", T_LONG, offsetof(InStream, highest_seq), 0, NULL},
    {"last_seq", T_LONG, offsetof(InStream, last_seq), 0, NULL},
    {"last_ts", T_UINT, offsetof(InStream, last_ts), 0, NULL},
    {"last_transit", T_DOUBLE, offsetof(InStream, last_transit), 0, NULL},
    {"jitter", T_DOUBLE, offsetof(InStream, jitter), 0, NULL},
    {"last_packet_at", T_DOUBLE, offsetof(InStream, last_packet_at), 0, NULL},
    {"last_keyframe_at", T_DOUBLE, offsetof(InStream, last_keyframe_at), 0, NULL},
    {"clock_rate", T_INT, offsetof(InStream, clock_rate), 0, NULL},
    {"keyframe_waiters", T_INT, offsetof(InStream, keyframe_waiters), 0, NULL},
    {"level", T_INT, offsetof(InStream, level), 0, NULL},
    {NULL},
};

static PyTypeObject InStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.transport._hotpath.InStream",
    .tp_doc = "Receive state of one RTP stream (base of Layer).",
    .tp_basicsize = sizeof(InStream),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)InStream_dealloc,
    .tp_traverse = (traverseproc)InStream_traverse,
    .tp_clear = (inquiry)InStream_clear,
    .tp_members = InStream_members,
};

static PyObject *str_view, *str_put, *str_note_missing, *str_is_keyframe, *str_nack_enabled;

/* Layer._account: receive statistics of one packet; 0, or -1 with an exception. */
static int
account(InStream *self, long seq, unsigned long ts, Py_ssize_t length, double now)
{
    self->received += 1;
    self->octets += length;
    self->last_packet_at = now;
    if (self->base_seq < 0) {
        self->base_seq = seq;
        self->highest_seq = seq;
        self->last_seq = seq;
        self->last_ts = (unsigned int)ts;
        self->last_transit = now * self->clock_rate - (double)ts;
        return 0;
    }
    long delta = (seq - self->highest_seq) & 0xFFFF;
    if (0 < delta && delta < 0x8000) {
        if (delta > 1 && self->track != NULL) {
            PyObject *track = self->track; /* held: the lookup may run Python */
            Py_INCREF(track);
            PyObject *nack = PyObject_GetAttr(track, str_nack_enabled);
            Py_DECREF(track);
            int enabled = nack == NULL ? -1 : PyObject_IsTrue(nack);
            Py_XDECREF(nack);
            if (enabled < 0)
                return -1;
            if (enabled) {
                PyObject *first = PyLong_FromLong(self->highest_seq + 1);
                PyObject *count = PyLong_FromLong(delta - 1);
                PyObject *when = PyFloat_FromDouble(now);
                PyObject *result = NULL;
                if (first != NULL && count != NULL && when != NULL)
                    result = PyObject_CallMethodObjArgs((PyObject *)self, str_note_missing, first,
                                                        count, when, NULL);
                Py_XDECREF(first);
                Py_XDECREF(count);
                Py_XDECREF(when);
                if (result == NULL)
                    return -1;
                Py_DECREF(result);
            }
        }
        if (seq < self->highest_seq)
            self->cycles += 0x10000;
        self->highest_seq = seq;
        self->last_seq = seq;
        self->last_ts = (unsigned int)ts;
    } else if (self->missing != NULL && PyDict_Check(self->missing) &&
               PyDict_GET_SIZE(self->missing) > 0) {
        PyObject *key = PyLong_FromLong(seq);
        if (key == NULL)
            return -1;
        if (PyDict_DelItem(self->missing, key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                Py_DECREF(key);
                return -1;
            }
            PyErr_Clear();
        }
        Py_DECREF(key);
    }
    double transit = now * self->clock_rate - (double)ts;
    double d = fabs(transit - self->last_transit);
    self->last_transit = transit;
    self->jitter += (d - self->jitter) / 16.0;
    return 0;
}

/* Layer.receive on a packet in memory: 0, or -1 with an exception set.
 *
 * Python runs in the middle (gap bookkeeping, the cache, keyframe detection,
 * DownTracks' own forward()), and may change any field of the layer: every
 * object is read afresh, checked and held where it is used, never kept from
 * before a call. */
static int
ingest(InStream *self, const unsigned char *p, Py_ssize_t length, double now)
{
    if (length < 12 || length > MAX_DATAGRAM) {
        PyErr_SetString(PyExc_ValueError, "receive_rtp: bad packet length");
        return -1;
    }
    unsigned long b1 = p[1];
    long seq = ((long)p[2] << 8) | p[3];
    unsigned long ts = ((unsigned long)p[4] << 24) | ((unsigned long)p[5] << 16) |
                       ((unsigned long)p[6] << 8) | p[7];
    /* The packet is copied first: ``p`` (the socket's buffer) is not ours
     * once Python runs. */
    PyObject *packet = PyBytes_FromStringAndSize((const char *)p, length);
    if (packet == NULL)
        return -1;
    int failed = 1;
    PyObject *seq_obj = NULL, *now_obj = NULL, *cache = NULL, *list = NULL;
    Py_INCREF(self);
    if (account(self, seq, ts, length, now) < 0)
        goto done;
    seq_obj = PyLong_FromLong(seq);
    now_obj = PyFloat_FromDouble(now);
    if (seq_obj == NULL || now_obj == NULL)
        goto done;
    cache = self->cache;
    if (cache == NULL || cache == Py_None) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp: layer.cache is unset");
        cache = NULL;
        goto done;
    }
    Py_INCREF(cache);
    PyObject *put = PyObject_CallMethodObjArgs(cache, str_put, seq_obj, packet, now_obj, NULL);
    if (put == NULL)
        goto done;
    Py_DECREF(put);
    int keyframe = 0;
    if (self->keyframe_waiters) {
        PyObject *size = PyLong_FromSsize_t(length);
        PyObject *answer = size == NULL ? NULL
                                        : PyObject_CallMethodObjArgs((PyObject *)self,
                                                                     str_is_keyframe, packet, size,
                                                                     NULL);
        Py_XDECREF(size);
        keyframe = answer == NULL ? -1 : PyObject_IsTrue(answer);
        Py_XDECREF(answer);
        if (keyframe < 0)
            goto done;
        if (keyframe)
            self->last_keyframe_at = now;
    }
    list = self->downtracks;
    if (list == NULL || !PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp: layer.downtracks must be a list");
        list = NULL;
        goto done;
    }
    Py_INCREF(list);
    failed = fanout_list(list, packet, (const unsigned char *)PyBytes_AS_STRING(packet), length, b1,
                         (unsigned long)seq, ts, keyframe, now, NULL);
done:
    Py_XDECREF(list);
    Py_XDECREF(cache);
    Py_XDECREF(seq_obj);
    Py_XDECREF(now_obj);
    Py_DECREF(packet);
    Py_DECREF(self);
    return failed ? -1 : 0;
}

/* receive_rtp(layer, buf, length, now) -> None
 *
 * Layer.receive (media/track.py) for one plaintext RTP packet in the
 * PacketBuffer ``buf``: statistics, the retransmission cache, keyframe
 * detection while subscribers wait for one, and the fan-out. */
static PyObject *
receive_rtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp takes 4 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &InStreamType)) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp: layer must be an InStream");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    double now = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *view_obj = PyObject_GetAttr(args[1], str_view);
    if (view_obj == NULL)
        return NULL;
    Py_buffer view;
    int got = PyObject_GetBuffer(view_obj, &view, PyBUF_SIMPLE);
    Py_DECREF(view_obj);
    if (got < 0)
        return NULL;
    int failed;
    if (length < 0 || length > view.len) {
        PyErr_SetString(PyExc_ValueError, "receive_rtp: bad packet length");
        failed = 1;
    } else {
        failed = ingest((InStream *)args[0], (const unsigned char *)view.buf, length, now);
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* remap_and_scan's pass; ``map`` has 16 entries. */
static void
scan_extensions(unsigned char *buf, Py_ssize_t length, const unsigned char *map, long twcc_id,
                long level_id, long *twcc, long *level)
{
    unsigned char first = buf[0];
    Py_ssize_t start = 12 + 4 * (first & 0x0F);
    if (!(first & 0x10) || start + 4 > length || buf[start] != 0xBE || buf[start + 1] != 0xDE)
        return;
    Py_ssize_t pos = start + 4;
    Py_ssize_t end = pos + 4 * (((Py_ssize_t)buf[start + 2] << 8) | buf[start + 3]);
    if (end > length)
        return;
    while (pos < end) {
        unsigned char byte = buf[pos];
        if (byte == 0) {
            pos += 1;
            continue;
        }
        int ext_id = byte >> 4;
        if (ext_id == 15)
            break;
        Py_ssize_t size = (byte & 0x0F) + 1;
        if (pos + 1 + size > end)
            break;
        if (ext_id == twcc_id && size == 2)
            *twcc = ((long)buf[pos + 1] << 8) | buf[pos + 2];
        else if (ext_id == level_id)
            *level = buf[pos + 1] & 0x7F;
        buf[pos] = (unsigned char)((map[ext_id] << 4) | (byte & 0x0F));
        pos += 1 + size;
    }
}

/* -- ingress ---------------------------------------------------------------
 *
 * read_datagrams(fd, rx, view, by_sockaddr, on_other, now, counters) -> int
 *
 * Reads what the socket holds (at most MAX_READS datagrams), each in turn into ``view``
 * (the writable memory of the PacketBuffer ``rx``). For an address in
 * ``by_sockaddr`` (packed sockaddr -> Endpoint), SRTP (RFC 7983: first byte
 * 128-191, RFC 5761: second byte outside 192-223) is decrypted in place with
 * the endpoint's inbound session and handed over as plaintext,
 * ``endpoint.on_rtp(rx, length, now)``, or reported with
 * ``endpoint.rtp_failed()``; SRTCP, and SRTP before keys exist, go to
 * ``endpoint.on_srtp(rx, length, now)``. Anything else — STUN, DTLS, media
 * from an unknown address, garbage — goes to ``on_other(length, sockaddr,
 * now)``. Returns how many datagrams were read. The Python loop this replaces
 * is MediaSocket._read_python (transport/udp.py): the same, less an exception
 * per wake-up, an address tuple per packet and two Python calls per packet. */

#define MAX_READS 64

static PyObject *str_on_srtp, *str_on_rtp, *str_rtp_failed, *str_rx_address, *str_handler,
    *str_layers_by_ssrc, *str_ext_table, *str_level_id, *str_twcc_id, *str_twcc, *str_record,
    *str_muted, *str_stats, *str_rtp_in, *str_media_error;

static long
long_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    long result = PyLong_AsLong(value);
    Py_DECREF(value);
    return result;
}

/* MediaPeer.on_rtp (media/peer.py) for a packet of a stream the peer knows by
 * its SSRC: extension scan, transport-cc, audio level, mute, then the layer's
 * receive step. 1 when done, 0 when this is not such a packet (the caller
 * runs endpoint.on_rtp: RTX, simulcast SSRCs on first sight, other handlers),
 * -1 with an exception set. */
static int
known_rtp(PyObject *endpoint, unsigned char *buf, int len, double now)
{
    if (len < 12)
        return 0;
    PyObject *peer = PyObject_GetAttr(endpoint, str_handler);
    if (peer == NULL)
        return -1;
    int done = -1;
    PyObject *layers = NULL, *layer = NULL, *track = NULL, *table = NULL;
    layers = PyObject_GetAttr(peer, str_layers_by_ssrc);
    if (layers == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear(); /* not a MediaPeer */
            done = 0;
        }
        goto out;
    }
    if (!PyDict_Check(layers)) {
        done = 0;
        goto out;
    }
    unsigned long ssrc = ((unsigned long)buf[8] << 24) | ((unsigned long)buf[9] << 16) |
                         ((unsigned long)buf[10] << 8) | buf[11];
    PyObject *key = PyLong_FromUnsignedLong(ssrc);
    if (key == NULL)
        goto out;
    layer = PyDict_GetItemWithError(layers, key);
    Py_DECREF(key);
    if (layer == NULL) {
        if (!PyErr_Occurred())
            done = 0;
        goto out;
    }
    Py_INCREF(layer);
    if (!PyObject_TypeCheck(layer, &InStreamType) || ((InStream *)layer)->track == NULL) {
        done = 0;
        goto out;
    }
    /* From here on the packet is ours, as MediaPeer.on_rtp would take it. */
    PyObject *stats = PyObject_GetAttr(endpoint, str_stats);
    if (stats == NULL)
        goto out;
    PyObject *counted = PyDict_Check(stats) ? PyDict_GetItemWithError(stats, str_rtp_in) : NULL;
    long long count = counted == NULL ? -1 : PyLong_AsLongLong(counted);
    PyObject *plus = count < 0 ? NULL : PyLong_FromLongLong(count + 1);
    int stored = plus == NULL ? -1 : PyDict_SetItem(stats, str_rtp_in, plus);
    Py_XDECREF(plus);
    Py_DECREF(stats);
    if (stored < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "endpoint.stats needs an rtp_in count");
        goto out;
    }
    track = ((InStream *)layer)->track;
    Py_INCREF(track);
    table = PyObject_GetAttr(track, str_ext_table);
    if (table == NULL)
        goto out;
    if (!PyBytes_Check(table) || PyBytes_GET_SIZE(table) < 16) {
        PyErr_SetString(PyExc_TypeError, "track.ext_table must be 16 bytes");
        goto out;
    }
    long level_id = long_attr(track, str_level_id);
    long twcc_id = level_id == -1 && PyErr_Occurred() ? -1 : long_attr(peer, str_twcc_id);
    if (PyErr_Occurred())
        goto out;
    long twcc = -1, level = -1;
    scan_extensions(buf, len, (const unsigned char *)PyBytes_AS_STRING(table), twcc_id, level_id,
                    &twcc, &level);
    if (twcc >= 0) {
        PyObject *recorder = PyObject_GetAttr(peer, str_twcc);
        if (recorder == NULL)
            goto out;
        if (recorder != Py_None) {
            PyObject *seq_obj = PyLong_FromLong(twcc);
            PyObject *at = PyLong_FromLongLong((long long)(now * 1000000.0));
            PyObject *result = seq_obj == NULL || at == NULL
                                   ? NULL
                                   : PyObject_CallMethodObjArgs(recorder, str_record, seq_obj,
                                                                at, NULL);
            Py_XDECREF(seq_obj);
            Py_XDECREF(at);
            Py_DECREF(recorder);
            if (result == NULL)
                goto out;
            Py_DECREF(result);
        } else {
            Py_DECREF(recorder);
        }
    }
    if (level >= 0)
        ((InStream *)layer)->level = (int)level;
    PyObject *muted_obj = PyObject_GetAttr(track, str_muted);
    int muted = muted_obj == NULL ? -1 : PyObject_IsTrue(muted_obj);
    Py_XDECREF(muted_obj);
    if (muted < 0)
        goto out;
    if (!muted && ingest((InStream *)layer, buf, len, now) < 0)
        goto out;
    done = 1;
out:
    Py_XDECREF(table);
    Py_XDECREF(track);
    Py_XDECREF(layer);
    Py_XDECREF(layers);
    Py_DECREF(peer);
    return done;
}

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

/* One SRTP datagram of a bound endpoint: decrypt it here when the endpoint has
 * keys (the new reference to the result of the Python call, NULL on error). */
static PyObject *
media_in(PyObject *endpoint, PyObject *rx, unsigned char *buf, ssize_t n, PyObject *length_obj,
         PyObject *now_obj, double now)
{
    PyObject *method = str_on_srtp;
    PyObject *plain_len = NULL;
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
            int known = known_rtp(endpoint, buf, len, now);
            if (known < 0)
                return fatal_error() ? NULL : report_media_error(endpoint);
            if (known > 0)
                Py_RETURN_NONE;
            plain_len = PyLong_FromLong(len);
            if (plain_len == NULL)
                return NULL;
            method = str_on_rtp;
        } else {
            Py_DECREF(srtp);
        }
    }
    PyObject *call[5] = {NULL, endpoint, rx, plain_len ? plain_len : length_obj, now_obj};
    PyObject *result =
        PyObject_VectorcallMethod(method, call + 1, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(plain_len);
    return result;
}

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

/* One datagram, copied into ``view``: to its endpoint or to on_other.
 * 0, or -1 with an exception. */
static int
dispatch(unsigned char *buf, ssize_t n, const struct sockaddr_storage *from, socklen_t fromlen,
         PyObject *rx, PyObject *by_sockaddr, PyObject *on_other, PyObject *now_obj, double now)
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
            result = media_in(endpoint, rx, buf, n, length_obj, now_obj, now);
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
            if (dispatch(buf, n, &batch_from[k], fromlen, rx, by_sockaddr, on_other, now_obj,
                         now) < 0) {
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

/* remap_and_scan(view, length, table, twcc_id, level_id) -> (twcc_seq, level)
 *
 * wire/rtp.py remap_and_scan, byte for byte: one pass over one-byte header
 * extensions that reads the transport-wide sequence number and the audio
 * level and rewrites every id in place through ``table``. */
static PyObject *
remap_and_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "remap_and_scan takes 5 arguments");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    long twcc_id = PyLong_AsLong(args[3]);
    long level_id = PyLong_AsLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view, table;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &table, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long twcc = -1, level = -1;
    if (table.len < 16 || length < 1 || length > view.len) {
        PyErr_SetString(PyExc_ValueError,
                        "remap_and_scan: the table needs 16 entries and length must fit the buffer");
    } else {
        scan_extensions((unsigned char *)view.buf, length, (const unsigned char *)table.buf,
                        twcc_id, level_id, &twcc, &level);
    }
    PyBuffer_Release(&view);
    PyBuffer_Release(&table);
    if (PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(ll)", twcc, level);
}

static PyMethodDef methods[] = {
    {"set_srtp", (PyCFunction)(void (*)(void))set_srtp, METH_FASTCALL,
     "Give the addresses of libsrtp's srtp_protect and srtp_unprotect."},
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "Forward one packet to every DownTrack of a list."},
    {"receive_rtp", (PyCFunction)(void (*)(void))receive_rtp, METH_FASTCALL,
     "Layer.receive: account, cache, keyframe detection and fan-out of one packet."},
    {"read_datagrams", (PyCFunction)(void (*)(void))read_datagrams, METH_FASTCALL,
     "Read and dispatch what the media socket holds; how many datagrams."},
    {"remap_and_scan", (PyCFunction)(void (*)(void))remap_and_scan, METH_FASTCALL,
     "Read twcc and audio level, rewrite one-byte extension ids in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mediafed.transport._hotpath", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    if (PyType_Ready(&SendTargetType) < 0 || PyType_Ready(&ForwarderType) < 0 ||
        PyType_Ready(&InStreamType) < 0)
        return NULL;
    static const struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_view, "view"},
        {&str_put, "put"},
        {&str_note_missing, "_note_missing"},
        {&str_is_keyframe, "_is_keyframe"},
        {&str_nack_enabled, "nack_enabled"},
        {&str_forward, "forward"},
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
        {&str_layers_by_ssrc, "layers_by_ssrc"},
        {&str_ext_table, "ext_table"},
        {&str_level_id, "level_id"},
        {&str_twcc_id, "twcc_id"},
        {&str_twcc, "twcc"},
        {&str_record, "record"},
        {&str_muted, "muted"},
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
    if (PyModule_AddIntConstant(m, "MAX_DATAGRAM", MAX_DATAGRAM) < 0 ||
        PyModule_AddIntConstant(m, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyTypeObject *types[] = {&SendTargetType, &ForwarderType, &InStreamType};
    const char *type_names[] = {"SendTarget", "Forwarder", "InStream"};
    for (int i = 0; i < 3; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, type_names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
