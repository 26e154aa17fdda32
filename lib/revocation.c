/*
 * Revocation: the CRLs of a state, validated once when the state is built, and the
 * revocation decision of a verified chain (see revocation_check()).
 */
#include "internal.h"
