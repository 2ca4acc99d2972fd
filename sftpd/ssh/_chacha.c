/*
 * chacha20-poly1305@openssh.com in one call per packet, on OpenSSL 3's libcrypto.
 *
 * The pure-Python path (sftpd/ssh/chacha.py) creates two cipher contexts and a Poly1305
 * object for every packet; here the contexts live as long as the connection's keys and a
 * packet only re-IVs them, and the output is written straight into the bytes object that
 * is returned. Optional: when this does not build, chacha.py's Python path is used.
 *
 * OpenSSH's construction (PROTOCOL.chacha20poly1305): K_2 = key[0:32] encrypts the
 * payload from block counter 1 and gives the Poly1305 key at counter 0; K_1 = key[32:64]
 * encrypts the 4-byte length; the nonce is the 64-bit big-endian sequence number; the tag
 * is Poly1305 over the encrypted length and payload.
 *
 * The GIL is held throughout: a context belongs to one direction of one connection, and a
 * 32 KiB packet takes about 13 us, less than handing the GIL over would be worth.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <string.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "OpenSSL 3 is needed (EVP_MAC); the pure-Python path is used instead"
#endif

#define TAG_LEN 16

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *main;   /* K_2 */
    EVP_CIPHER_CTX *length; /* K_1 */
    EVP_MAC_CTX *mac;
} Chacha;

static EVP_CIPHER *chacha20;
static EVP_MAC *poly1305;

static void make_iv(unsigned char iv[16], unsigned long long seq, int counter) {
    /* OpenSSL's 16-byte ChaCha20 IV: 32-bit little-endian counter, then 96 bits of nonce;
       OpenSSH's 64-bit counter (< 2^32 here) and 64-bit nonce fit it exactly. */
    memset(iv, 0, 8);
    iv[0] = (unsigned char)counter;
    for (int i = 0; i < 8; i++)
        iv[8 + i] = (unsigned char)(seq >> (56 - 8 * i));
}

static int keystream(EVP_CIPHER_CTX *ctx, unsigned long long seq, int counter,
                     const unsigned char *in, unsigned char *out, Py_ssize_t len) {
    unsigned char iv[16];
    int outl = 0;
    make_iv(iv, seq, counter);
    if (!EVP_EncryptInit_ex2(ctx, NULL, NULL, iv, NULL))
        return 0;
    while (len > 0) { /* EVP_EncryptUpdate takes an int length */
        int n = len > (1 << 30) ? (1 << 30) : (int)len;
        if (!EVP_EncryptUpdate(ctx, out, &outl, in, n))
            return 0;
        in += n, out += n, len -= n;
    }
    return 1;
}

/* The Poly1305 key (first 32 bytes of block 0) and the payload (from block 1) from one
   IV of the main context. */
static int main_stream(Chacha *self, unsigned long long seq, const unsigned char *in,
                       unsigned char *out, Py_ssize_t len, unsigned char polykey[32]) {
    static const unsigned char zeros[64] = {0};
    unsigned char block0[64];
    int outl = 0;
    unsigned char iv[16];
    make_iv(iv, seq, 0);
    if (!EVP_EncryptInit_ex2(self->main, NULL, NULL, iv, NULL) ||
        !EVP_EncryptUpdate(self->main, block0, &outl, zeros, 64))
        return 0;
    memcpy(polykey, block0, 32);
    while (len > 0) {
        int n = len > (1 << 30) ? (1 << 30) : (int)len;
        if (!EVP_EncryptUpdate(self->main, out, &outl, in, n))
            return 0;
        in += n, out += n, len -= n;
    }
    return 1;
}

static int tag_of(Chacha *self, const unsigned char polykey[32], const unsigned char *a,
                  Py_ssize_t alen, const unsigned char *b, Py_ssize_t blen,
                  unsigned char tag[TAG_LEN]) {
    size_t outl = 0;
    return EVP_MAC_init(self->mac, polykey, 32, NULL) &&
           EVP_MAC_update(self->mac, a, (size_t)alen) &&
           EVP_MAC_update(self->mac, b, (size_t)blen) &&
           EVP_MAC_final(self->mac, tag, &outl, TAG_LEN) && outl == TAG_LEN;
}

static PyObject *fail(void) {
    PyErr_SetString(PyExc_RuntimeError, "libcrypto chacha20-poly1305 failed");
    return NULL;
}

static int Chacha_init(Chacha *self, PyObject *args, PyObject *kwds) {
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*", &key))
        return -1;
    if (key.len != 64) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "chacha20-poly1305 takes a 64-byte key");
        return -1;
    }
    unsigned char iv[16] = {0};
    self->main = EVP_CIPHER_CTX_new();
    self->length = EVP_CIPHER_CTX_new();
    self->mac = EVP_MAC_CTX_new(poly1305);
    int ok = self->main && self->length && self->mac &&
             EVP_EncryptInit_ex2(self->main, chacha20, key.buf, iv, NULL) &&
             EVP_EncryptInit_ex2(self->length, chacha20, (unsigned char *)key.buf + 32, iv,
                                 NULL);
    PyBuffer_Release(&key);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto has no usable ChaCha20/Poly1305");
        return -1;
    }
    return 0;
}

static void Chacha_dealloc(Chacha *self) {
    EVP_CIPHER_CTX_free(self->main); /* each wipes its key schedule */
    EVP_CIPHER_CTX_free(self->length);
    EVP_MAC_CTX_free(self->mac);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The encrypted header and payload into o, the tag into tag. */
static int seal_into(Chacha *self, unsigned long long seq, Py_buffer *header,
                     Py_buffer *payload, unsigned char *o, unsigned char *tag) {
    unsigned char polykey[32];
    int ok = keystream(self->length, seq, 0, header->buf, o, header->len) &&
             main_stream(self, seq, payload->buf, o + header->len, payload->len, polykey) &&
             tag_of(self, polykey, o, header->len, o + header->len, payload->len, tag);
    OPENSSL_cleanse(polykey, sizeof polykey);
    return ok;
}

/* encrypt(seq, header, payload) -> (encrypted header + payload, tag) */
static PyObject *Chacha_encrypt(Chacha *self, PyObject *args) {
    unsigned long long seq;
    Py_buffer header, payload;
    if (!PyArg_ParseTuple(args, "Ky*y*", &seq, &header, &payload))
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, header.len + payload.len);
    PyObject *tag = PyBytes_FromStringAndSize(NULL, TAG_LEN);
    int ok = out && tag &&
             seal_into(self, seq, &header, &payload, (unsigned char *)PyBytes_AS_STRING(out),
                       (unsigned char *)PyBytes_AS_STRING(tag));
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    if (!ok) {
        Py_XDECREF(out);
        Py_XDECREF(tag);
        return PyErr_Occurred() ? NULL : fail();
    }
    return Py_BuildValue("(NN)", out, tag);
}

/* seal(seq, header, payload) -> encrypted header + payload + tag, one buffer to send */
static PyObject *Chacha_seal(Chacha *self, PyObject *args) {
    unsigned long long seq;
    Py_buffer header, payload;
    if (!PyArg_ParseTuple(args, "Ky*y*", &seq, &header, &payload))
        return NULL;
    Py_ssize_t n = header.len + payload.len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + TAG_LEN);
    int ok = out && seal_into(self, seq, &header, &payload,
                              (unsigned char *)PyBytes_AS_STRING(out),
                              (unsigned char *)PyBytes_AS_STRING(out) + n);
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    if (!ok) {
        Py_XDECREF(out);
        return PyErr_Occurred() ? NULL : fail();
    }
    return out;
}

/* decrypt_header(seq, header) -> the decrypted length bytes */
static PyObject *Chacha_decrypt_header(Chacha *self, PyObject *args) {
    unsigned long long seq;
    Py_buffer header;
    if (!PyArg_ParseTuple(args, "Ky*", &seq, &header))
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, header.len);
    int ok = out && keystream(self->length, seq, 0, header.buf,
                              (unsigned char *)PyBytes_AS_STRING(out), header.len);
    PyBuffer_Release(&header);
    if (!ok) {
        Py_XDECREF(out);
        return PyErr_Occurred() ? NULL : fail();
    }
    return out;
}

/* decrypt(seq, first, rest, header_len, tag) -> payload, or None if the tag is wrong.
   The tag covers first + rest (the encrypted length is the start of first). */
static PyObject *Chacha_decrypt(Chacha *self, PyObject *args) {
    unsigned long long seq;
    Py_buffer first, rest, tag;
    Py_ssize_t header_len;
    if (!PyArg_ParseTuple(args, "Ky*y*ny*", &seq, &first, &rest, &header_len, &tag))
        return NULL;
    PyObject *out = NULL;
    int ok = 0, verified = 0;
    if (header_len < 0 || header_len > first.len || tag.len != TAG_LEN) {
        PyErr_SetString(PyExc_ValueError, "bad chacha20-poly1305 packet framing");
        goto done;
    }
    Py_ssize_t body = first.len - header_len;
    out = PyBytes_FromStringAndSize(NULL, body + rest.len);
    if (!out)
        goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    unsigned char polykey[32], want[TAG_LEN];
    static const unsigned char zeros[64] = {0};
    unsigned char block0[64], iv[16];
    int outl = 0;
    make_iv(iv, seq, 0);
    ok = EVP_EncryptInit_ex2(self->main, NULL, NULL, iv, NULL) &&
         EVP_EncryptUpdate(self->main, block0, &outl, zeros, 64);
    if (ok) {
        memcpy(polykey, block0, 32);
        ok = tag_of(self, polykey, first.buf, first.len, rest.buf, rest.len, want);
        OPENSSL_cleanse(polykey, sizeof polykey);
    }
    if (ok && CRYPTO_memcmp(want, tag.buf, TAG_LEN) == 0) {
        verified = 1; /* only then decrypt: the stream continues at block 1 */
        const unsigned char *in = (const unsigned char *)first.buf + header_len;
        Py_ssize_t n = body;
        unsigned char *w = o;
        for (int part = 0; ok && part < 2; part++) {
            while (ok && n > 0) {
                int m = n > (1 << 30) ? (1 << 30) : (int)n;
                ok = EVP_EncryptUpdate(self->main, w, &outl, in, m);
                in += m, w += m, n -= m;
            }
            in = rest.buf, n = rest.len;
        }
    }
done:
    PyBuffer_Release(&first);
    PyBuffer_Release(&rest);
    PyBuffer_Release(&tag);
    if (PyErr_Occurred()) {
        Py_XDECREF(out);
        return NULL;
    }
    if (!ok) {
        Py_XDECREF(out);
        return fail();
    }
    if (!verified) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef Chacha_methods[] = {
    {"encrypt", (PyCFunction)Chacha_encrypt, METH_VARARGS,
     "encrypt(seq, header, payload) -> (encrypted header + payload, tag)"},
    {"seal", (PyCFunction)Chacha_seal, METH_VARARGS,
     "seal(seq, header, payload) -> encrypted header + payload + tag"},
    {"decrypt_header", (PyCFunction)Chacha_decrypt_header, METH_VARARGS,
     "decrypt_header(seq, header) -> decrypted header"},
    {"decrypt", (PyCFunction)Chacha_decrypt, METH_VARARGS,
     "decrypt(seq, first, rest, header_len, tag) -> payload or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ChachaType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sftpd.ssh._chacha.Chacha",
    .tp_basicsize = sizeof(Chacha),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "chacha20-poly1305@openssh.com for one direction's 64-byte key",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Chacha_init,
    .tp_dealloc = (destructor)Chacha_dealloc,
    .tp_methods = Chacha_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chacha",
    "chacha20-poly1305@openssh.com on libcrypto (optional accelerator)", -1, NULL,
};

PyMODINIT_FUNC PyInit__chacha(void) {
    chacha20 = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL);
    poly1305 = EVP_MAC_fetch(NULL, "POLY1305", NULL);
    if (!chacha20 || !poly1305) {
        PyErr_SetString(PyExc_ImportError, "libcrypto lacks ChaCha20 or Poly1305");
        return NULL;
    }
    if (PyType_Ready(&ChachaType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&ChachaType);
    if (PyModule_AddObject(m, "Chacha", (PyObject *)&ChachaType) < 0) {
        Py_DECREF(&ChachaType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
