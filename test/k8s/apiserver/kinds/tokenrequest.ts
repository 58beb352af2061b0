import { INT64, message, METADATA, STRING, stringsMessage, type MessageSpec } from '../protobuf-messages.js';
import type { KindDescriptor } from './descriptor.js';

// authentication/v1 (kubectl create token sends it; status = 3 is not read):
//   TokenRequest { metadata = 1; spec = 2 }
//   TokenRequestSpec { audiences = 1 (repeated); boundObjectRef = 3; expirationSeconds = 4 }
//   BoundObjectReference { kind = 1; apiVersion = 2; name = 3; uid = 4 }
const BOUND_OBJECT_REFERENCE = stringsMessage(
  'BoundObjectReference',
  [
    [1, 'kind'],
    [2, 'apiVersion'],
    [3, 'name'],
    [4, 'uid'],
  ],
  true,
);

const TOKEN_REQUEST: MessageSpec = {
  name: 'TokenRequest',
  fields: [
    METADATA,
    {
      no: 2,
      json: 'spec',
      type: message({
        name: 'TokenRequestSpec',
        fields: [
          { no: 1, json: 'audiences', type: STRING, repeated: true },
          { no: 4, json: 'expirationSeconds', type: INT64 },
          { no: 3, json: 'boundObjectRef', type: message(BOUND_OBJECT_REFERENCE) },
        ],
      }),
    },
  ],
};

/** The body of `serviceaccounts/<name>/token` (not a resource of its own): only its protobuf message. */
export const tokenRequest: KindDescriptor = {
  group: 'authentication.k8s.io',
  version: 'v1',
  kind: 'TokenRequest',
  protobuf: TOKEN_REQUEST,
};
